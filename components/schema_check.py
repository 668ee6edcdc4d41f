"""Plan fidelity: check planned resource inputs against the installed provider SDKs.

Pulumi's mocks accept any key inside a dict input and any string for an enum, so a typo such as
`log_config={"sampel_rate": 1.0}` or `locality_lb_policy="LEAST_REQEST"` passes every offline test and
fails only at `pulumi preview` with credentials. This module closes that gap without a cloud: it derives
each resource's input schema from the installed SDK (pulumi_gcp, pulumi_docker, pulumi_random: the `...Args`
input classes, their `@pulumi.getter(name=...)` names, their type annotations and docstrings) and checks a
recorded resource against it:

1. keys: every key at every depth is a property of its input type (lists of objects and maps included);
2. nested required fields: a nested object carries every field its input type requires;
3. documented enums: a string property whose docstring lists its possible values holds one of them;
4. names and labels: explicitly set GCP names and labels follow GCP's documented patterns.

`check_resources(plan["resources"])` checks the offline plan's resource list;
`python -m components.schema_check plan.json` does the same for a saved
`python -m components.plan STACK --json` output (exit 2 on findings). See docs/plan-fidelity.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import gc
import importlib
import inspect
import json
import re
import sys
import types
import typing
from collections import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Placeholders the offline plan writes for values it cannot know, plus the raw wire forms the mocks receive.
PLACEHOLDERS = frozenset(
    {"[secret]", "[unknown]", "[dynamic provider]", "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}
)
_SIG_KEY = "4dabf18193072939515e22adb298388d"  # pulumi.runtime.rpc._special_sig_key
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi.runtime.rpc._special_secret_sig
_PULUMI_NAME_ATTR = "_pulumi_name"  # set by @pulumi.getter on a property getter
_DYNAMIC_PROVIDER_KEY = "__provider"  # the serialized provider that every dynamic resource carries

# Modules that declare dynamic resources; imported lazily, only when a plan contains a dynamic resource.
DYNAMIC_PROVIDER_MODULES: tuple[str, ...] = ("components.vertex_provider",)


@dataclass(frozen=True)
class Finding:
    """One input that the real provider would reject (or that GCP's naming rules forbid)."""

    resource: str
    type_token: str
    path: str
    check: str  # "unknown-key" | "missing-required" | "enum" | "name" | "label" | "unknown-type"
    value: str
    message: str
    suggestion: str | None = None
    suggestion_alias: str | None = None  # the same key in the other spelling (Pulumi name vs python name)

    def __str__(self) -> str:
        alias = f" ({self.suggestion_alias})" if self.suggestion_alias else ""
        hint = f" (did you mean `{self.suggestion}`{alias}?)" if self.suggestion else ""
        where = f".{self.path}" if self.path else ""
        return f"[{self.check}] {self.type_token} {self.resource!r}{where}: {self.message}{hint}"


# ----------------------------------------------------------------------------------------------------
# Schema model: derived once per input class (functools.cache), shapes resolved lazily per property.
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scalar:
    is_str: bool = False
    enum: tuple[str, ...] | None = None  # from a Literal[...] or Enum annotation


@dataclass(frozen=True)
class ObjectOf:
    cls: type


@dataclass(frozen=True)
class ListOf:
    item: Shape


@dataclass(frozen=True)
class MapOf:
    value: Shape


Shape = Scalar | ObjectOf | ListOf | MapOf
ANY = Scalar()


@dataclass(frozen=True)
class Property:
    pulumi_name: str
    python_name: str
    owner: type
    hint_source: Callable[[], Any]  # returns the resolved annotation; called lazily (get_type_hints is slow)
    doc: str

    @functools.cached_property
    def shape(self) -> Shape:
        return _shape_of(self.hint_source())

    @functools.cached_property
    def allowed_values(self) -> tuple[str, ...] | None:
        """The enum values of a string property: from its annotation, else from its SDK docstring."""
        shape = self.shape
        if not isinstance(shape, Scalar):
            return None
        if shape.enum is not None:
            return shape.enum
        return documented_values(self.doc) if shape.is_str else None


@dataclass(frozen=True)
class ObjectSchema:
    title: str
    properties: Mapping[str, Property]  # by Pulumi (wire) name
    python_names: Mapping[str, str]  # python name -> Pulumi name
    required: frozenset[str]  # Pulumi names

    def lookup(self, key: str, *, allow_python_name: bool) -> Property | None:
        if key in self.properties:
            return self.properties[key]
        if allow_python_name and key in self.python_names:
            return self.properties[self.python_names[key]]
        return None

    def suggest(self, key: str) -> tuple[str | None, str | None]:
        """The closest valid key in the spelling the caller used (snake_case or camelCase), and a note
        naming the other spelling."""
        snake = "_" in key and key.lower() == key
        pool = list(self.python_names) if snake else list(self.properties)
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
        if not match:
            match = difflib.get_close_matches(
                key, list(self.properties) + list(self.python_names), n=1, cutoff=0.6
            )
        if not match:
            return None, None
        pulumi_name = self.python_names.get(match[0], match[0])
        python_name = self.properties[pulumi_name].python_name
        if python_name == pulumi_name:
            return pulumi_name, None
        if snake:
            return python_name, f"Pulumi name `{pulumi_name}`"
        return pulumi_name, f"python `{python_name}`"


def _is_pulumi_input_type(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, "_pulumi_input_type")


def _is_object_class(cls: Any) -> bool:
    return isinstance(cls, type) and (
        _is_pulumi_input_type(cls)
        or dataclasses.is_dataclass(cls)
        or typing.is_typeddict(cls)
        or hasattr(cls, "model_fields")  # pydantic v2 model
    )


def _flatten(hint: Any) -> Iterator[Any]:
    """Strip Optional/None, pulumi.Input (Union[T, Awaitable[T], Output[T]]) and Output[T] to the members."""
    if hint is type(None):
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            yield from _flatten(arg)
        return
    if origin in (abc.Awaitable, typing.Awaitable) or getattr(origin, "__name__", "") == "Output":
        args = typing.get_args(hint)
        if args:
            yield from _flatten(args[0])
        return
    yield hint


def _shape_of(hint: Any) -> Shape:
    """The most structured shape among a hint's union members: object > list > map > scalar."""
    members = list(_flatten(hint))
    objects = [m for m in members if _is_object_class(m)]
    if objects:
        return ObjectOf(objects[0])
    for member in members:
        origin = typing.get_origin(member)
        if origin in (list, tuple, abc.Sequence, typing.Sequence):
            args = typing.get_args(member)
            return ListOf(_shape_of(args[0]) if args else ANY)
    for member in members:
        origin = typing.get_origin(member)
        if origin in (dict, abc.Mapping, typing.Mapping):
            args = typing.get_args(member)
            return MapOf(_shape_of(args[1]) if len(args) == 2 else ANY)
    literals = [m for m in members if typing.get_origin(m) is typing.Literal]
    enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
    if literals and len(literals) + len(enums) == len(members):
        values = [str(v) for m in literals for v in typing.get_args(m)]
        values += [str(member.value) for e in enums for member in e]
        return Scalar(is_str=True, enum=tuple(dict.fromkeys(values)))
    if enums:
        # An SDK enum annotation is Union[str, SomeEnum] in practice: the enum's values are the allowed ones.
        return Scalar(is_str=True, enum=tuple(dict.fromkeys(str(m.value) for e in enums for m in e)))
    return Scalar(is_str=any(m is str for m in members))


def _resolver(fn: Any, owner: type, key: str) -> Callable[[], Any]:
    """Resolves a getter's (or class's) annotations in its module's namespace, so that forward references
    such as 'BackendServiceLogConfigArgs' find the class they name."""

    def resolve() -> Any:
        import pulumi

        # Output and T appear as forward references in pulumi.Input / InputType aliases.
        localns = {"Output": pulumi.Output, "T": type(None)}
        globalns = vars(sys.modules[owner.__module__])
        return typing.get_type_hints(fn, globalns=globalns, localns=localns).get(key, Any)

    return resolve


@functools.cache
def object_schema(cls: type) -> ObjectSchema:
    """The input schema of a pulumi `...Args` input class, a dataclass, a TypedDict or a pydantic model."""
    props: dict[str, Property] = {}
    required: set[str] = set()
    if _is_pulumi_input_type(cls):
        for base in reversed(cls.__mro__):
            for python_name, member in vars(base).items():
                pulumi_name = getattr(getattr(member, "fget", None), _PULUMI_NAME_ATTR, None)
                if isinstance(member, property) and isinstance(pulumi_name, str):
                    fget = member.fget
                    props[pulumi_name] = Property(
                        pulumi_name,
                        python_name,
                        cls,
                        _resolver(fget, cls, "return"),
                        inspect.getdoc(fget) or "",
                    )
        # The SDK's __init__ has no default exactly for the required properties.
        signature = inspect.signature(cls)
        by_python = {p.python_name: p.pulumi_name for p in props.values()}
        required = {
            by_python[name]
            for name, param in signature.parameters.items()
            if param.default is inspect.Parameter.empty
            and param.kind is inspect.Parameter.KEYWORD_ONLY
            and name in by_python
        }
    elif typing.is_typeddict(cls):
        # Not __required_keys__: with `from __future__ import annotations`, Python 3.11 misses NotRequired.
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            props[name] = Property(name, name, cls, _resolver(cls, cls, name), "")
            marker = typing.get_origin(hint)
            if marker is typing.Required or (
                marker is not typing.NotRequired and getattr(cls, "__total__", True)
            ):
                required.add(name)
    elif dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            props[f.name] = Property(f.name, f.name, cls, _resolver(cls, cls, f.name), "")
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.add(f.name)
    else:  # pydantic v2: the wire key is the alias when one is declared
        for name, info in cls.model_fields.items():  # type: ignore[attr-defined]
            key = info.alias or name
            props[key] = Property(key, name, cls, functools.partial(lambda i: i.annotation, info), "")
            if info.is_required():
                required.add(key)
    python_names = {p.python_name: p.pulumi_name for p in props.values() if p.python_name != p.pulumi_name}
    return ObjectSchema(cls.__name__, props, python_names, frozenset(required))


# ----------------------------------------------------------------------------------------------------
# Documented enum values.
# ----------------------------------------------------------------------------------------------------

# "the following are valid values:" introduces examples, not an exhaustive list: hence "valid values ARE".
_LIST_PHRASE = (
    r"possible\s+values(?:\s+are)?|(?:valid|supported|accepted)\s+values\s+are|must\s+be\s+one\s+of"
)
# A list ends at a full stop, a blank line, the end, or where the next "possible values" phrase starts.
_INLINE_LIST = re.compile(
    rf"(?is)\b(?:{_LIST_PHRASE})\s*:?\s*(?P<list>.*?)(?:\.(?=\s|$)|\n\s*\n|$|(?=\b(?:{_LIST_PHRASE})\b))"
)
_BULLET_HEADER = re.compile(rf"(?i)\b(?:{_LIST_PHRASE})\s*:\s*$")
_TOKEN = re.compile(r"`(?P<tick>[^`]+)`|\"(?P<quote>[^\"]+)\"|(?P<bare>\b[A-Z][A-Z0-9_]*\b)")
_SEPARATORS = re.compile(r"(?i)[\s,\[\]]+|\band\b|\bor\b")
_BULLET = re.compile(r"^(?P<indent>\s*)[*-]\s+(?P<text>.*)$")
_BULLET_TOKEN = re.compile(
    r"^(?:`(?P<tick>[^`]+)`|\"(?P<quote>[^\"]+)\"|(?P<bare>[A-Z][A-Z0-9_]*))(?:\s*$|\s*:|\s+-\s)"
)


def _pure_token_list(text: str) -> tuple[str, ...] | None:
    """The tokens of a text that is nothing but a list of tokens (`A`, `B` and `C`); else None."""
    tokens = [
        (m.group("tick") or m.group("quote") or m.group("bare")).strip('"') for m in _TOKEN.finditer(text)
    ]
    if not tokens or _SEPARATORS.sub("", _TOKEN.sub("", text)).strip(" :"):
        return None
    return tuple(tokens)


def _bullet_list(lines: list[str], start: int) -> tuple[str, ...] | None:
    """The values of a bullet list (`* `A`: what A does`) that follows a "possible values are:" line."""
    values: list[str] = []
    bullet_indent: int | None = None
    for line in lines[start:]:
        if not line.strip():
            break
        bullet = _BULLET.match(line)
        indent = len(line) - len(line.lstrip())
        if bullet and (bullet_indent is None or len(bullet.group("indent")) == bullet_indent):
            bullet_indent = len(bullet.group("indent"))
            token = _BULLET_TOKEN.match(bullet.group("text"))
            if token is None:
                return None  # a bullet that does not start with a value: not an enum list
            values.append((token.group("tick") or token.group("quote") or token.group("bare")).strip('"'))
        elif bullet_indent is not None and indent > bullet_indent:
            continue  # continuation of the previous bullet's description
        else:
            break
    return tuple(values) or None


@functools.cache
def documented_values(doc: str) -> tuple[str, ...] | None:
    """The possible values a pulumi docstring lists for a property, or None when it lists none.

    Recognised: "Possible values are: `A`, `B`, `C`." (also without backticks, quoted, or as
    "Possible values: ["A", "B"]"), and a bullet list under a line ending in "possible values are:".
    A list mixed with prose is not an enum list, so it is ignored rather than guessed at.
    """
    found: list[str] = []
    for match in _INLINE_LIST.finditer(doc):
        tokens = _pure_token_list(match.group("list"))
        if tokens:
            found.extend(tokens)
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if _BULLET_HEADER.search(line):
            tokens = _bullet_list(lines, index + 1)
            if tokens:
                found.extend(tokens)
    return tuple(dict.fromkeys(found)) or None


# ----------------------------------------------------------------------------------------------------
# Type token -> SDK input class.
# ----------------------------------------------------------------------------------------------------


@functools.cache
def sdk_args_class(type_token: str) -> type | None:
    """`gcp:compute/backendService:BackendService` -> pulumi_gcp.compute.BackendServiceArgs, or None when the
    package is not installed (a component, a provider, or a package we do not check)."""
    try:
        package, module_path, class_name = type_token.split(":")
    except ValueError:
        return None
    module_name = module_path.split("/")[0]
    python_package = "pulumi_" + package.replace("-", "_")
    python_module = python_package if module_name == "index" else f"{python_package}.{module_name}"
    try:
        module = importlib.import_module(python_module)  # a no-op when the program already built this type
    except ImportError:
        return None
    # One pulumi_gcp token spells its class in lower case (`...:entitlement`), also its submodule's name.
    candidates = (
        getattr(module, name, None) for name in (class_name, class_name[:1].upper() + class_name[1:])
    )
    resource_cls = next((c for c in candidates if isinstance(c, type)), None)
    if resource_cls is None:
        raise LookupError(f"{type_token}: no class {class_name} in {python_module}")
    args_cls = getattr(sys.modules[resource_cls.__module__], resource_cls.__name__ + "Args", None)
    return args_cls if _is_pulumi_input_type(args_cls) else None


# ----------------------------------------------------------------------------------------------------
# Dynamic resources: checked against the input class their provider declares.
# ----------------------------------------------------------------------------------------------------

DYNAMIC_SCHEMAS: dict[str, type] = {}


def register_dynamic_schema(type_token: str, inputs_cls: type) -> None:
    """Declare the inputs (a dataclass, TypedDict or pydantic model; keys as sent) of a dynamic resource
    type, e.g. `register_dynamic_schema("pulumi-python:dynamic/vertex:ModelDeployment", DeploymentInputs)`."""
    if not _is_object_class(inputs_cls):
        raise TypeError(f"{inputs_cls!r} is not a dataclass, TypedDict or pydantic model")
    DYNAMIC_SCHEMAS[type_token] = inputs_cls


def _dynamic_schema(type_token: str) -> type | None:
    """The registered schema; else the input class declared next to the one pulumi.dynamic.Resource
    subclass with this type token: its `INPUTS` attribute, or `<ClassName>Inputs` in its module. The token
    comes from `class VertexModelDeployment(Resource, module="vertex", name="ModelDeployment")`."""
    if type_token in DYNAMIC_SCHEMAS:
        return DYNAMIC_SCHEMAS[type_token]
    for module_name in DYNAMIC_PROVIDER_MODULES:
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise  # the module exists but is broken: that must not pass silently
    import pulumi.dynamic

    candidates: list[type] = []
    pending: list[type] = [pulumi.dynamic.Resource]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if f"pulumi-python:{getattr(cls, '_resource_type_name', '')}" != type_token:
            continue
        module = sys.modules.get(cls.__module__)
        inputs = vars(cls).get("INPUTS") or getattr(module, f"{cls.__name__}Inputs", None)
        if isinstance(inputs, type) and _is_object_class(inputs):
            candidates.append(inputs)
    # Two classes sharing the default token `pulumi-python:dynamic:Resource` cannot be told apart: no guess.
    if len(candidates) != 1:
        return None
    DYNAMIC_SCHEMAS[type_token] = candidates[0]
    return candidates[0]


# ----------------------------------------------------------------------------------------------------
# Names and labels: https://cloud.google.com/compute/docs/naming-resources and
# https://cloud.google.com/resource-manager/docs/labels-overview
# ----------------------------------------------------------------------------------------------------

_RFC1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"


@dataclass(frozen=True)
class NameRule:
    pattern: str
    min_len: int
    max_len: int
    description: str


_COMPUTE_NAME = NameRule(
    _RFC1035, 1, 63, "a lowercase letter, then lowercase letters, digits or '-', not ending in '-'"
)
# (type token prefix, input key) -> rule. Display names (monitoring, Vertex) are free text and are not listed.
NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("gcp:compute/", "name"): _COMPUTE_NAME,
    # The provider appends a 26-character timestamp+counter to prefixes <= 37 characters; 54 is its limit.
    ("gcp:compute/", "namePrefix"): NameRule(r"[a-z][-a-z0-9]*", 1, 54, "a lowercase letter, then [-a-z0-9]"),
    # Instances are named base + '-' + 4 random characters, and the result must still be <= 63.
    ("gcp:compute/", "baseInstanceName"): NameRule(_RFC1035, 1, 58, _COMPUTE_NAME.description),
    ("gcp:serviceaccount/account:", "accountId"): NameRule(
        r"[a-z]([-a-z0-9]*[a-z0-9])",
        6,
        30,
        "6-30 characters: a lowercase letter, then [-a-z0-9], not ending in '-'",
    ),
    ("gcp:secretmanager/secret:", "secretId"): NameRule(
        r"[A-Za-z0-9_-]+", 1, 255, "letters, digits, '_' and '-'"
    ),
    ("gcp:artifactregistry/repository:", "repositoryId"): NameRule(
        _RFC1035, 1, 63, "a lowercase letter, then lowercase letters, digits or '-'"
    ),
    ("gcp:vertex/aiEndpoint:", "name"): NameRule(
        r"[1-9][0-9]*", 1, 10, "numeric, no leading zero, <= 10 digits"
    ),
}
# Resource labels: the top-level label maps, and nested ones that label a GCP resource (a template's disks).
# Other nested `labels` maps are not resource labels (an uptime check's monitoredResource.labels has a host).
LABEL_KEYS = frozenset({"labels", "userLabels", "resourceLabels"})
NESTED_LABEL_OWNERS = frozenset(
    {"InstanceTemplateDiskArgs", "RegionInstanceTemplateDiskArgs", "InstanceBootDiskInitializeParamsArgs"}
)


def _suggest_name(value: str, rule: NameRule) -> str | None:
    candidate = re.sub(r"[^-a-z0-9]+", "-", value.lower()).strip("-")[: rule.max_len].rstrip("-")
    if candidate and not candidate[0].isalpha():
        candidate = ("x-" + candidate)[: rule.max_len].rstrip("-")
    return candidate if candidate != value and _name_ok(candidate, rule) else None


def _name_ok(value: str, rule: NameRule) -> bool:
    return rule.min_len <= len(value) <= rule.max_len and re.fullmatch(rule.pattern, value) is not None


def _label_text_ok(text: str, *, key: bool) -> bool:
    # Lowercase letters (international ones too), digits, '_' and '-'; keys start with a lowercase letter.
    if key and not (text[:1].isalpha() and text[:1].islower()):
        return False
    return len(text) <= 63 and all(c.islower() or c.isdigit() or c in "_-" for c in text)


# ----------------------------------------------------------------------------------------------------
# The walk.
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Walk:
    name: str
    type_token: str
    gcp: bool
    findings: list[Finding] = field(default_factory=list)

    def add(
        self,
        path: str,
        check: str,
        value: str,
        message: str,
        suggestion: str | None = None,
        alias: str | None = None,
    ) -> None:
        self.findings.append(
            Finding(self.name, self.type_token, path, check, value, message, suggestion, alias)
        )

    def object(self, schema: ObjectSchema, value: Mapping[str, Any], path: str, *, top: bool) -> None:
        present: set[str] = set()
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else key
            if top and key == _DYNAMIC_PROVIDER_KEY and self.type_token.startswith("pulumi-python:dynamic"):
                continue
            prop = schema.lookup(key, allow_python_name=not top)
            if prop is None:
                suggestion, alias = schema.suggest(key)
                message = f"unknown key {key!r}: not an input of {schema.title}"
                self.add(key_path, "unknown-key", key, message, suggestion, alias)
                continue
            # A null the mocks recorded is an output they did not fill in (unknown at preview): not omitted.
            present.add(prop.pulumi_name)
            self.value(prop, prop.shape, item, key_path)
        # An SDK enforces top-level required inputs itself, nested ones not; a dynamic resource enforces none.
        dynamic = self.type_token.startswith("pulumi-python:dynamic")
        for missing in sorted(schema.required - present) if dynamic or not top else ():
            python_name = schema.properties[missing].python_name
            spelled = missing if python_name == missing else f"{missing} (python {python_name})"
            message = f"{schema.title} requires {spelled}, which this object lacks"
            self.add(f"{path}.{missing}" if path else missing, "missing-required", missing, message)

    def value(self, prop: Property, shape: Shape, value: Any, path: str) -> None:
        if isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG:
            value = value.get("value")  # a raw secret from the mocks: check what it wraps
        if value is None or (isinstance(value, str) and value in PLACEHOLDERS):
            return
        if isinstance(shape, ObjectOf) and isinstance(value, dict):
            self.object(object_schema(shape.cls), value, path, top=False)
        elif isinstance(shape, ListOf) and isinstance(value, list):
            for index, item in enumerate(value):
                self.value(prop, shape.item, item, f"{path}[{index}]")
        elif isinstance(shape, MapOf) and isinstance(value, dict):
            top_level = "." not in path and "[" not in path
            if (
                self.gcp
                and prop.pulumi_name in LABEL_KEYS
                and (top_level or prop.owner.__name__ in NESTED_LABEL_OWNERS)
            ):
                self.labels(value, path)
            for key, item in value.items():
                self.value(prop, shape.value, item, f"{path}[{key!r}]")
        elif isinstance(shape, Scalar) and isinstance(value, str) and value:
            allowed = shape.enum if shape.enum is not None else prop.allowed_values
            if allowed and not _allowed(value, allowed):
                close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
                message = f"{value!r} is not one of the documented values: {', '.join(allowed)}"
                self.add(path, "enum", value, message, close[0] if close else None)

    def labels(self, labels: Mapping[str, Any], path: str) -> None:
        if len(labels) > 64:
            self.add(path, "label", str(len(labels)), f"{len(labels)} labels; GCP allows at most 64")
        for key, val in labels.items():
            if not _label_text_ok(key, key=True) or not key:
                fixed = re.sub(r"[^a-z0-9_-]+", "_", key.lower()).lstrip("_-0123456789")[:63] or None
                message = (
                    f"label key {key!r} must be 1-63 lowercase letters, digits, '_' or '-', "
                    "starting with a letter"
                )
                self.add(f"{path}[{key!r}]", "label", key, message, fixed if fixed != key else None)
            if isinstance(val, str) and val not in PLACEHOLDERS and not _label_text_ok(val, key=False):
                fixed = re.sub(r"[^a-z0-9_-]+", "-", val.lower())[:63]
                message = f"label value {val!r} must be at most 63 lowercase letters, digits, '_' or '-'"
                self.add(f"{path}[{key!r}]", "label", val, message, fixed if fixed != val else None)

    def names(self, inputs: Mapping[str, Any]) -> None:
        for (prefix, key), rule in NAME_RULES.items():
            value = inputs.get(key)
            if not self.type_token.startswith(prefix) or not isinstance(value, str) or value in PLACEHOLDERS:
                continue
            if not _name_ok(value, rule):
                message = (
                    f"{value!r} ({len(value)} characters) is not a valid {key}: "
                    f"{rule.min_len}-{rule.max_len} characters, {rule.description} (pattern {rule.pattern})"
                )
                self.add(key, "name", value, message, _suggest_name(value, rule))


def _allowed(value: str, allowed: tuple[str, ...]) -> bool:
    # A documented value may be a template such as `container:<name|id>`: its placeholder matches anything.
    templates = (
        re.sub(r"<[^>]*>|\\\{[^}]*\\\}", ".+", re.escape(v)) for v in allowed if "<" in v or "{" in v
    )
    return value in allowed or any(re.fullmatch(t, value) for t in templates)


def _skipped(type_token: str) -> bool:
    # Components (ours and others') are not provider resources; providers take config, not resource inputs.
    return type_token.startswith(("pulumi:", "vllm-gcp:")) or ":" not in type_token


def check_resource(type_token: str, inputs: Mapping[str, Any], name: str) -> list[Finding]:
    """Every finding for one resource, given its Pulumi type token and its registered inputs (camelCase)."""
    if _skipped(type_token):
        return []
    # Our dynamic providers all manage GCP resources, so GCP's label rules apply to their `labels` too.
    walk = _Walk(name, type_token, gcp=type_token.startswith(("gcp:", "pulumi-python:dynamic")))
    schema_cls: type | None
    if type_token.startswith("pulumi-python:dynamic"):
        schema_cls = _dynamic_schema(type_token)
        if schema_cls is None:
            return []  # no declared schema yet: tolerated, see docs/plan-fidelity.md
    else:
        try:
            schema_cls = sdk_args_class(type_token)
        except LookupError as error:
            walk.add("", "unknown-type", type_token, str(error))
            return walk.findings
        if schema_cls is None:
            return []
    walk.object(object_schema(schema_cls), inputs, "", top=True)
    if type_token.startswith("gcp:"):
        walk.names(inputs)
    return walk.findings


def check_resources(resources: list[dict[str, Any]]) -> list[Finding]:
    """Every finding for the offline plan's resources (each `{"urn", "type", "name", "parent", "inputs"}`)."""
    findings: list[Finding] = []
    # The cyclic GC would otherwise walk the ~10^6 objects the SDK modules created at import (~200 ms)
    # in the middle of a check that itself makes few objects and no garbage cycles worth collecting.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for resource in resources:
            findings.extend(check_resource(resource["type"], resource.get("inputs") or {}, resource["name"]))
    finally:
        if was_enabled:
            gc.enable()
    return findings


def main(argv: list[str] | None = None) -> int:
    """`python -m components.schema_check PLAN.json` (from `python -m components.plan STACK --json`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m components.schema_check PLAN.json  (or - for stdin)", file=sys.stderr)
        return 2
    if args[0] == "-":
        text = sys.stdin.read()
    else:
        with open(args[0], encoding="utf-8") as plan_file:
            text = plan_file.read()
    findings = check_resources(json.loads(text)["resources"])
    for finding in findings:
        print(f"error: {finding}", file=sys.stderr)
    return 2 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
