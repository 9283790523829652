"""Managed (lifecycle) variants of the nodes that support them: segmentation, detection, recorder.

`managed_variant(NodeClass)` returns `rclpy.lifecycle.LifecycleNode` + the node's own class, so
there is one implementation; the node class provides the hooks

- `configure_resources()`: load the model (perception, from `model_path` when set) or open the
  store, bag and worker (recorder);
- `release_resources()`: the reverse;
- `accepting`: inputs are processed only while it is True;

and with `MANAGED = False` (a plain node) does configure and activate itself in `__init__`.
The managed variant starts unconfigured and follows the standard transitions through
`<node>/change_state` (lifecycle_msgs/srv/ChangeState): configure -> configure_resources,
activate -> accepting, deactivate -> not accepting, cleanup -> release_resources, shutdown
(from any state) -> both. `tst-ros node NAME --managed` and `ros2 run tst_ros NAME --managed`
start it (`tst_ros.ros.nodes.run_node`).
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

MANAGED_FLAG = "--managed"
_variants: dict[type, type] = {}


class ManagedNodeMixin:
    """Lifecycle transitions mapped onto a node's configure/release hooks and `accepting` gate."""

    MANAGED = True

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.configure_resources()
        except Exception as e:  # noqa: BLE001 - a failed configure stays unconfigured
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._release_quietly()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.accepting = True
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.accepting = False
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release_quietly()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.accepting = False
        self._release_quietly()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.accepting = False
        self._release_quietly()
        return TransitionCallbackReturn.SUCCESS

    def _release_quietly(self) -> None:
        try:
            self.release_resources()
        except Exception as e:  # noqa: BLE001 - report, the transition still completes
            self.get_logger().error(f"releasing resources failed: {type(e).__name__}: {e}")


def supports_lifecycle(node_cls: type) -> bool:
    return all(hasattr(node_cls, name) for name in ("configure_resources", "release_resources"))


def managed_variant(node_cls: type) -> type:
    """The managed (LifecycleNode) class of `node_cls`, built once per class."""
    if not supports_lifecycle(node_cls):
        raise ValueError(f"{node_cls.__name__} has no managed (lifecycle) variant")
    if node_cls not in _variants:
        _variants[node_cls] = type(f"Managed{node_cls.__name__}", (ManagedNodeMixin, node_cls, LifecycleNode),
                                   {"__module__": node_cls.__module__, "__doc__": node_cls.__doc__})
    return _variants[node_cls]


def split_managed_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """(`--managed` given before any --ros-args, argv without it)."""
    end = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if MANAGED_FLAG not in argv[:end]:
        return False, list(argv)
    i = argv.index(MANAGED_FLAG)
    return True, argv[:i] + argv[i + 1:]
