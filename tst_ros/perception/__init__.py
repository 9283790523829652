"""Transfer and 2D perception: segmentation / detection heads on the TST encoder, training on
an external COCO-style labeled set, evaluation metrics, ONNX export and the deployment runtime.
ROS-free; the nodes in tst_ros.ros.nodes call into runtime.py."""
