"""The perception node as a managed lifecycle node (``perception_node --lifecycle``).

What Nav2's lifecycle manager (or ``ros2 lifecycle set``) expects:

* unconfigured -> configure: parameters read and checked, model loaded and warmed up (the slow
  part; its duration is logged), services and /diagnostics up;
* inactive -> activate: subscriptions, output publishers (lifecycle publishers) and the worker;
* active -> deactivate: images no longer taken, the worker stopped (a window being inferred is
  interrupted and dropped); the map, trajectory and keyframes stay, and the services still answer;
* inactive -> cleanup: the model and its GPU memory freed, the map dropped (back to unconfigured);
* any state -> shutdown: all of that at once.

A refused configuration (bad parameter, missing checkpoint) fails the configure transition with
its reason in the log and leaves the node unconfigured. Transitions that are not allowed from the
current state are refused by the lifecycle state machine (``success: false``). With
``autostart`` the node configures and activates itself at start-up.
"""

from __future__ import annotations

from typing import Any

from lifecycle_msgs.srv import ChangeState
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from vggt_ros.ros.node import NODE_NAME, PerceptionCore
from vggt_ros.ros.node_parameters import ConfigError


class PerceptionLifecycleNode(PerceptionCore, LifecycleNode):
    """The VGGT perception node with the managed lifecycle of the module docstring."""

    lifecycle_state = "unconfigured"

    def __init__(self, autostart: bool = False, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._guard_change_state()
        self._init_core()
        self.get_logger().info(f"lifecycle node up (unconfigured){'; autostart' if autostart else ''}")
        if autostart:
            self.trigger_configure()
            if self.lifecycle_state == "inactive":
                self.trigger_activate()

    def _guard_change_state(self) -> None:
        """Answer a transition that is not available from the current state with
        ``success: false`` (rclpy's own handler raises inside the executor instead)."""
        service = self._service_change_state
        handle = service.callback

        def change_state(request: ChangeState.Request, response: ChangeState.Response) -> Any:
            machine = self._state_machine
            available = {t[0]: t[1] for t in machine.available_transitions}
            wanted = request.transition.id
            if request.transition.label:
                wanted = next((i for i, label in available.items() if label == request.transition.label), -1)
            if wanted not in available:
                name = request.transition.label or str(request.transition.id)
                self.get_logger().warning(
                    f"transition {name} refused: not available in state {machine.current_state[1]} "
                    f"(available: {', '.join(available.values()) or 'none'})"
                )
                response.success = False
                return response
            return handle(request, response)

        service.callback = change_state

    def _output_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        # Lifecycle publishers publish only while the node is active.
        return self.create_lifecycle_publisher(msg_type, topic, qos)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except ConfigError as exc:
            self.get_logger().error(f"configure refused: {exc}")
            self._cleanup_partial()
            return TransitionCallbackReturn.FAILURE
        self.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        self.lifecycle_state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.lifecycle_state = "inactive"
        self.get_logger().info("deactivated: not taking images; the map is kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.lifecycle_state = "unconfigured"
        self.get_logger().info("cleaned up: model and map freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.predictor is not None:
            self._cleanup()
        self.lifecycle_state = "finalized"
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: cleaning up")
        self._cleanup_partial()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _cleanup_partial(self) -> None:
        """Undo whatever a failed configure created."""
        if self.predictor is not None or self._own_services:
            self._cleanup()
        self.predictor = self.pipeline = None
