"""Node parameters: declaration with descriptions and ranges, reading, run-time changes, and the
start-up checks that refuse parameter combinations which would fail on the first window.

Mixed into the perception node classes (:mod:`vggt_ros.ros.node`); the parameter tables and
per-value validation live in :mod:`vggt_ros.ros.params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.parameter import Parameter

from vggt_ros.ros.params import (
    NODE_PARAMS,
    ParamSpec,
    camera_param_specs,
    mapping_param_specs,
    validate_mapping,
    validate_node_value,
)


class ConfigError(ValueError):
    """A parameter value the node refuses at start-up (the message says which and why)."""


@dataclass
class CameraConfig:
    """One entry of the ``cameras`` parameter (``topic`` as configured, before remapping)."""

    name: str
    topic: str
    transport: str
    camera_info_topic: str
    frame_id: str


def _descriptor(name: str, spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    return desc


class ParametersMixin:
    """Declares, reads and validates the node's parameters (see :mod:`vggt_ros.ros.params`)."""

    def _declare_one(self, name: str, spec: ParamSpec) -> None:
        value: Any = spec.default
        if isinstance(value, list) and not value:
            value = Parameter.Type.STRING_ARRAY
        try:
            self.declare_parameter(name, value, _descriptor(name, spec))
        except Exception as exc:  # rclpy raises several types for bad overrides
            raise ConfigError(f"parameter {name}: {exc}") from None
        current = self._value(name)
        if current is None and isinstance(spec.default, list):
            return
        reason = validate_node_value(name, current, spec)
        if reason:
            raise ConfigError(reason)

    def _declare(self) -> None:
        for name, spec in NODE_PARAMS.items():
            self._declare_one(name, spec)
        for name in self._value("cameras"):
            for pname, spec in camera_param_specs(name).items():
                self._declare_one(pname, spec)
        for name, (default, doc) in mapping_param_specs().items():
            spec = ParamSpec(default, f"{doc} (mapping; changes apply on ~/reset)")
            self._declare_one(name, spec)
            self._mapping_keys.append(name)
        self._declare_one(
            "export.max_keyframes",
            ParamSpec(
                300,
                "Newest keyframes kept (images, depth) for ~/export_keyframes.",
                low=1,
                high=100000,
                read_only=True,
            ),
        )

    def _value(self, name: str) -> Any:
        param = self.get_parameter_or(name, None)
        value = None if param is None else param.value
        if isinstance(value, tuple):
            value = list(value)
        return value

    def _mapping_values(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        values = {k: self._value(k) for k in self._mapping_keys}
        values.update(overrides or {})
        for k, v in values.items():
            if v is None:
                values[k] = []
            elif isinstance(v, tuple):
                values[k] = list(v)
        return values

    def _mapping_config(self, overrides: dict[str, Any] | None = None) -> Any:
        from vggt_ros.mapping import PipelineConfig

        values = self._mapping_values(overrides)
        if len(self.cameras) > 1 and not values.get("window.rig_cameras"):
            values["window.rig_cameras"] = [c.name for c in self.cameras]
        reason = validate_mapping(values)
        if reason:
            raise ConfigError(reason)
        return PipelineConfig.from_flat(values)

    def _read_cameras(self) -> list[CameraConfig]:
        cams = []
        for name in self._value("cameras"):
            g = lambda key, n=name: self._value(f"camera.{n}.{key}")  # noqa: E731
            cams.append(CameraConfig(name, g("topic"), g("transport"), g("camera_info_topic"), g("frame_id")))
        topics = [c.topic for c in cams]
        if len(set(topics)) != len(topics):
            raise ConfigError(f"two cameras share an image topic: {topics}")
        return cams

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        mapping: dict[str, Any] = {}
        for p in params:
            value = list(p.value) if isinstance(p.value, tuple) else p.value
            if p.name in NODE_PARAMS:
                reason = validate_node_value(p.name, value, NODE_PARAMS[p.name])
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
            elif p.name in self._mapping_keys:
                mapping[p.name] = value
        if mapping:
            reason = validate_mapping(self._mapping_values(mapping))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for p in params:
            if p.name in NODE_PARAMS:
                self._p[p.name] = list(p.value) if isinstance(p.value, tuple) else p.value
        if mapping:
            self.get_logger().info(f"mapping parameters {sorted(mapping)} changed: they apply on ~/reset")
        return SetParametersResult(successful=True)
