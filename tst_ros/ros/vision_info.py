"""What a perception node latches about the model it serves: vision_msgs/LabelInfo (class ids
and names, the unlabeled value, the score threshold) and vision_msgs/VisionInfo (`method`,
`database_location` naming the LabelInfo topic, `database_version` = the model version).

Serving an adapter-bank entry (`tst_ros.ros.bank_switch`), the entry is named `bank:<entry>`
in VisionInfo.method ("tst_ros segmentation bank:office") and in LabelInfo's class map as a
VisionClass with the reserved id BANK_CLASS_ID (65534). LabelInfo has no free-text field
besides header.frame_id, which names a coordinate frame; 65534 is never an output value
(masks are mono8, detection ids index at most 256 classes) and is not uint16's "unlabeled"
(65535), so readers that map output ids to names are unaffected.
"""
from __future__ import annotations

from vision_msgs.msg import LabelInfo, VisionClass, VisionInfo

BANK_CLASS_ID = 65534


def bank_label(entry: str) -> str:
    return f"bank:{entry}"


def model_info_messages(classes: list[str], class_ids: list[int], unlabeled_id: int | None, threshold: float,
                        method: str, label_topic: str, version: int, stamp,
                        bank_entry: str | None = None) -> tuple[LabelInfo, VisionInfo]:
    class_map = [VisionClass(class_id=int(i), class_name=classes[i]) for i in class_ids]
    if unlabeled_id is not None:
        class_map.append(VisionClass(class_id=unlabeled_id, class_name="unlabeled"))
    if bank_entry:
        class_map.append(VisionClass(class_id=BANK_CLASS_ID, class_name=bank_label(bank_entry)))
        method = f"{method} {bank_label(bank_entry)}"
    label = LabelInfo(class_map=class_map, threshold=float(threshold))
    label.header.stamp = stamp
    info = VisionInfo(method=method, database_location=label_topic, database_version=int(version))
    info.header.stamp = stamp
    return label, info
