"""Config keys as declared ROS 2 parameters, and back.

Every key of `config.Config` is a parameter of the node under its dotted name
(`refiner.threshold`), which is what rclpy makes of the nested params YAML. Each
gets a descriptor made from the key's declaration (`config.spec`): its type, the
help text as description, its range, its choices and extra rule ("odd") in
`additional_constraints`. Keys whose change rebuilds the models are not
`read_only` (a lifecycle manager sets them while the node is unconfigured, then
configures it); the node refuses them while configured, saying so in the reason.
All checking of values is `config.set_value`'s; nothing here knows a rule.
"""
from __future__ import annotations

import array
import copy
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from ..config import Config, ConfigError, KeySpec, flatten, set_value
from ..config import spec as key_spec
from ..errors import one_line

_TYPE_NAMES = {ParameterType.PARAMETER_BOOL: "bool", ParameterType.PARAMETER_INTEGER: "integer",
               ParameterType.PARAMETER_DOUBLE: "double", ParameterType.PARAMETER_STRING: "string",
               ParameterType.PARAMETER_INTEGER_ARRAY: "integer array",
               ParameterType.PARAMETER_DOUBLE_ARRAY: "double array",
               ParameterType.PARAMETER_STRING_ARRAY: "string array",
               ParameterType.PARAMETER_BOOL_ARRAY: "bool array"}

# the parameter type of each declared config type (type, list item type)
_PARAM_TYPES = {(bool, None): Parameter.Type.BOOL, (int, None): Parameter.Type.INTEGER,
                (float, None): Parameter.Type.DOUBLE, (str, None): Parameter.Type.STRING,
                (list, int): Parameter.Type.INTEGER_ARRAY, (list, float): Parameter.Type.DOUBLE_ARRAY,
                (list, str): Parameter.Type.STRING_ARRAY}

READ_ONLY_NOTE = ("set only while unconfigured: a change rebuilds the models "
                  "(deactivate, cleanup, set it, configure, activate)")


@dataclass
class ParamSpec:
    name: str
    default: Any
    type: int                          # rcl_interfaces ParameterType
    description: str
    constraints: str
    read_only: bool                    # needs the models rebuilt: refused while configured
    range: tuple[float, float] | None

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES[self.type]


def config_keys() -> list[str]:
    return list(flatten(Config()))


def param_specs(cfg: Config | None = None) -> list[ParamSpec]:
    """One spec per config key, defaults taken from `cfg` (or the dataclass defaults)."""
    specs = []
    for name, value in flatten(cfg or Config()).items():
        s = key_spec(name)
        notes = []
        if s.choices is not None:
            notes.append("one of: " + ", ".join(s.choices))
        if s.range is not None:
            low, high = s.range
            notes.append(f"from {low} to {high}" if s.type is int else f"from {low:g} to {high:g}")
        if s.check is not None and s.check.note:
            notes.append(s.check.note)
        if s.reload:
            notes.append(READ_ONLY_NOTE)
        specs.append(ParamSpec(name=name, default=copy.copy(value), type=_param_type(s).value,
                               description=s.help, constraints="; ".join(notes),
                               read_only=s.reload, range=s.range))
    return specs


def _param_type(s: KeySpec) -> Parameter.Type:
    # declared, not inferred from the value: rclpy would take an empty list for bytes
    return _PARAM_TYPES[(s.type, s.item_type)]


def _is_string_list(name: str) -> bool:
    return key_spec(name).item_type is str


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    # never read_only: the lifecycle node takes model keys while unconfigured (see READ_ONLY_NOTE)
    d = ParameterDescriptor(name=spec.name, type=spec.type, description=spec.description,
                            additional_constraints=spec.constraints)
    if spec.range is not None and spec.type == ParameterType.PARAMETER_INTEGER:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    elif spec.range is not None and spec.type == ParameterType.PARAMETER_DOUBLE:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]), step=0.0)]
    return d


def plain(value: Any) -> Any:
    """A parameter value as config.set_value takes it (integer arrays come as array.array)."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


def overrides_from_config(cfg: Config, keys: list[str] | None = None) -> list[Parameter]:
    """Parameters carrying `cfg`'s values (all keys, or `keys`): for Node(parameter_overrides=...)."""
    values = flatten(cfg)
    out = []
    for k in (keys if keys is not None else values):
        if _is_string_list(k):
            # an empty override would reach declare_parameter untyped (bytes): empty is the default
            if values[k]:
                out.append(Parameter(k, Parameter.Type.STRING_ARRAY, values[k]))
        else:
            out.append(Parameter(k, value=values[k]))
    return out


def declare_config(node) -> Config:
    """Declare every config key on `node` and return the validated Config they hold.

    Values come from the node's overrides (a params file, `-p`, or parameter_overrides)
    over the dataclass defaults. Raises ConfigError naming the key.
    """
    for spec in param_specs():
        # rclpy cannot type an empty list default: declare the type, then give it the real
        # (empty) value, so GetParameters and `ros2 param dump` return it like every other key
        default = Parameter.Type.STRING_ARRAY if _is_string_list(spec.name) and not spec.default else spec.default
        try:
            param = node.declare_parameter(spec.name, default, descriptor(spec))
        except InvalidParameterTypeException as exc:
            raise ConfigError(f"parameter {spec.name}: expected a {spec.type_name} "
                              f"({one_line(exc)})") from None
        except InvalidParameterValueException as exc:
            raise ConfigError(f"parameter {spec.name}: {one_line(exc)}") from None
        if param.type_ == Parameter.Type.NOT_SET:
            node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
    return read_config(node)


def read_config(node) -> Config:
    """The validated Config the node's parameters hold now (what `configure` builds from).

    Raises ConfigError naming the key."""
    cfg = Config()
    for name in config_keys():
        param = node.get_parameter(name)
        if param.type_ != Parameter.Type.NOT_SET:
            set_value(cfg, name, plain(param.value))
    return cfg


def check_change(cfg: Config, changes: dict[str, Any]) -> str:
    """Why these changes cannot be applied to `cfg` ("" when they can); `cfg` is not touched."""
    trial = copy.deepcopy(cfg)
    for name, value in changes.items():
        try:
            set_value(trial, name, plain(value))
        except ConfigError as exc:
            return str(exc)
    return ""
