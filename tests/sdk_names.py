"""Check a notebook's SageMaker SDK names and arguments against the installed SDK, offline.

Run by the Python of a virtualenv that has one SDK major version (runs/sdk-v2, runs/sdk-v3;
`make sdk-venvs`), never by the project's: `python tests/sdk_names.py NOTEBOOK.ipynb SDK`.
It prints a JSON report: {"version", "network" (interface names), "checked", "errors"}.

Nothing here calls the SDK: it imports the modules the `aws` cells import, follows the names
they bind (`x = Class(...)`, `y = x.method(...)`, `for v in x.field`), and checks every call
whose target it can resolve by binding the call's arguments to the target's signature, and
every attribute read on a resolved object (a class or instance member, a pydantic field or
private attribute, a dataclass field, or an attribute the class's source assigns on `self`).
Return types come from annotations, or from RETURNS where the SDK has none. The test runs this
without a network (an empty network namespace) so that nothing, telemetry included, leaves.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib
import inspect
import json
import socket
import sys
import types
import typing
import warnings

# Return types the SDK does not annotate, by the notebook's variable name, per SDK (checked
# against the annotation where there is one).
RETURNS = {
    "v2": {
        # Model.deploy() returns predictor_cls(...), and the notebook passes Predictor.
        "predictor": "sagemaker.predictor.Predictor",
        "transformer": "sagemaker.transformer.Transformer",
    },
    "v3": {
        "model": "sagemaker.core.resources.Model",
        "endpoint": "sagemaker.core.resources.Endpoint",
        "transformer": "sagemaker.core.transformer.Transformer",
        "training_job": "sagemaker.core.resources.TrainingJob",
    },
}


@dataclasses.dataclass(frozen=True)
class Ref:
    """What a notebook expression stands for: a module, a class, an instance, a callable."""

    kind: str  # "module", "class", "instance", "callable", "list"
    value: typing.Any  # the module, class or function; for "list", the element's Ref
    owner: type | None = None  # callables: the class the method was read from
    bound: bool = False  # callables: read from an instance (or a classmethod): no `self`

    def label(self) -> str:
        if self.kind == "callable" and self.owner is not None:
            return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.value.__name__}"
        value = self.value
        return getattr(value, "__module__", "") + "." + getattr(value, "__qualname__", str(value))


def _object(path: str) -> typing.Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _sources(path: str) -> list[tuple[int, str]]:
    with open(path) as file:
        notebook = json.load(file)
    cells = []
    for number, cell in enumerate(notebook["cells"], 1):
        if cell["cell_type"] == "code" and "aws" in cell["metadata"].get("tags", []):
            lines = "".join(cell["source"]).splitlines()
            keep = ["" if line.lstrip().startswith(("!", "%")) else line for line in lines]
            cells.append((number, "\n".join(keep)))
    return cells


@functools.cache
def _self_attributes(cls: type) -> frozenset[str]:
    """Names the source of cls and its bases assigns on `self`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                names.add(node.attr)
    return frozenset(names)


def _annotation_ref(annotation: typing.Any, context: typing.Any) -> Ref | None:
    """The Ref of an annotation: a class, Optional[class], list[class]; None when ambiguous."""
    if annotation is inspect.Signature.empty or annotation is typing.Any:
        return None
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        name = annotation.strip("'\"")
        if name.startswith("Optional[") and name.endswith("]"):
            name = name[len("Optional[") : -1].strip("'\"")
        scope = getattr(context, "__globals__", None) or vars(
            sys.modules[getattr(context, "__module__", "builtins")]
        )
        found = scope.get(name)
        return Ref("instance", found) if isinstance(found, type) else None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        refs = [_annotation_ref(arg, context) for arg in typing.get_args(annotation)]
        refs = [
            ref
            for ref in refs
            if ref is not None
            and not (ref.kind == "instance" and ref.value.__module__ == "builtins")
            and "PipelineVariable" not in getattr(ref.value, "__name__", "")
        ]
        return refs[0] if len(refs) == 1 else None
    if origin in (list, typing.List):  # noqa: UP006
        (element,) = typing.get_args(annotation) or (None,)
        inner = _annotation_ref(element, context)
        return Ref("list", inner) if inner else None
    if isinstance(annotation, type) and annotation is not type(None):
        return Ref("instance", annotation)
    return None


def _member(cls: type, name: str, bound: bool) -> Ref | bool | None:
    """cls's member `name` as a Ref; None if it exists but its type is unknown; False if absent."""
    fields = getattr(cls, "model_fields", None) or {}
    if name in fields:
        return _annotation_ref(fields[name].annotation, cls)
    private = getattr(cls, "__private_attributes__", None) or {}
    if name in private:
        hints = {}
        for klass in cls.__mro__:
            hints = {**getattr(klass, "__annotations__", {}), **hints}
        return _annotation_ref(hints.get(name), cls)
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return _annotation_ref(cls.__dataclass_fields__[name].type, cls)
    static = None
    for klass in cls.__mro__:
        if name in vars(klass):
            static = vars(klass)[name]
            break
    if static is None:
        return None if name in _self_attributes(cls) else False
    if isinstance(static, property):
        fget = static.fget
        return _annotation_ref(inspect.signature(fget).return_annotation, fget)
    if isinstance(static, staticmethod):
        return Ref("callable", static.__func__, cls, bound=True)
    if isinstance(static, classmethod):
        return Ref("callable", static.__func__, cls, bound=True)
    if callable(static):
        return Ref("callable", static, cls, bound=bound)
    return None


def _named(target: Ref) -> set[str]:
    """The parameter names of the target's function, and of the functions of the same name up
    its class tree (where a `**kwargs` is usually forwarded)."""
    if target.kind == "class":
        owner, name = target.value, "__init__"
    elif target.owner is not None:
        owner, name = target.owner, target.value.__name__
    else:
        return set(inspect.signature(target.value).parameters)
    names: set[str] = set()
    for klass in owner.__mro__:
        function = vars(klass).get(name)
        if isinstance(function, (staticmethod, classmethod)):
            function = function.__func__
        if callable(function):
            try:
                names |= set(inspect.signature(function).parameters)
            except (TypeError, ValueError):
                continue
    if target.kind == "class":  # pydantic models and dataclasses: their signature is the fields
        names |= set(inspect.signature(owner).parameters)
    return names


class Checker:
    """Resolves the names of one notebook's aws cells and checks what it can resolve."""

    def __init__(self, sdk: str):
        self.sdk = sdk
        self.names: dict[str, Ref] = {}
        self.checked: list[str] = []
        self.errors: list[str] = []
        self.cell = 0

    def error(self, node: ast.AST, message: str) -> None:
        self.errors.append(f"cell {self.cell}, line {node.lineno}: {message}")

    def resolve(self, node: ast.expr) -> Ref | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.BoolOp):
            return self.resolve(node.values[0])
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is None:
                return None
            if base.kind == "module":
                try:
                    value = getattr(base.value, node.attr)
                except AttributeError:
                    self.error(node, f"module {base.value.__name__} has no {node.attr!r}")
                    return None
                self.checked.append(f"{base.value.__name__}.{node.attr}")
                return self.wrap(value)
            if base.kind in ("class", "instance"):
                member = _member(base.value, node.attr, bound=base.kind == "instance")
                if member is False:
                    self.error(node, f"{base.label()} has no attribute {node.attr!r}")
                    return None
                self.checked.append(f"{base.label()}.{node.attr}")
                return member
            return None
        if isinstance(node, ast.Call):
            return self.call(node)
        return None

    @staticmethod
    def wrap(value: typing.Any) -> Ref | None:
        if isinstance(value, types.ModuleType):
            return Ref("module", value)
        if isinstance(value, type):
            return Ref("class", value)
        if callable(value):
            return Ref("callable", value)
        return None

    def call(self, node: ast.Call) -> Ref | None:
        target = self.resolve(node.func)
        if target is None or target.kind not in ("class", "callable"):
            return None
        function = target.value
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None
        args: list[typing.Any] = [object()] * len(node.args)
        if target.kind == "callable" and target.owner is not None and not target.bound:
            args = [object(), *args]  # a method read from the class: self is the first argument
        elif target.kind == "callable" and target.bound and target.owner is not None:
            parameters = list(signature.parameters.values())
            if parameters and parameters[0].name in ("self", "cls"):
                args = [object(), *args]
        kwargs = {kw.arg: object() for kw in node.keywords if kw.arg is not None}
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(
            kw.arg is None for kw in node.keywords
        )
        if not starred:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as error:
                self.error(node, f"{target.label()}({ast.unparse(node)[:60]}...): {error}")
            unnamed = sorted(kwargs.keys() - _named(target))
            if unnamed and any(
                p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
            ):  # taken by **kwargs, and no method of that name up the class tree names it
                self.error(node, f"{target.label()}: no parameter named {unnamed} (only **kwargs)")
        self.checked.append(f"{target.label()}()")
        if target.kind == "class":
            return Ref("instance", function)
        returned = _annotation_ref(signature.return_annotation, function)
        if returned is None and isinstance(signature.return_annotation, str):
            # `-> "ModelTrainer"` on ModelTrainer's own methods (a forward reference)
            owner = target.owner
            if owner is not None and signature.return_annotation.strip("'\"") == owner.__name__:
                returned = Ref("instance", owner)
        return returned

    def bind(self, target: ast.expr, ref: Ref | None, node: ast.AST) -> None:
        if not isinstance(target, ast.Name):
            return
        hint = RETURNS[self.sdk].get(target.id)
        if hint is not None:
            hinted = Ref("instance", _object(hint))
            if ref is not None and ref.kind == "instance" and ref.value is not hinted.value:
                self.error(node, f"{target.id}: the SDK says {ref.label()}, RETURNS says {hint}")
            ref = hinted
        if ref is not None:
            self.names[target.id] = ref
        else:
            self.names.pop(target.id, None)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sagemaker":
                    module = importlib.import_module(alias.name)
                    top = alias.asname or alias.name.split(".")[0]
                    self.names[top] = Ref("module", module if alias.asname else sys.modules[top])
                    self.checked.append(f"import {alias.name}")
            return
        if isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] != "sagemaker":
                return
            try:
                module = importlib.import_module(node.module)
            except ImportError as error:
                self.error(node, f"cannot import {node.module}: {error}")
                return
            for alias in node.names:
                if not hasattr(module, alias.name):
                    self.error(node, f"{node.module} has no {alias.name!r}")
                    continue
                self.checked.append(f"from {node.module} import {alias.name}")
                ref = self.wrap(getattr(module, alias.name))
                if ref is not None:
                    self.names[alias.asname or alias.name] = ref
            return
        if isinstance(node, ast.Assign):
            ref = self.resolve(node.value)
            for target in node.targets:
                self.bind(target, ref, node)
        elif isinstance(node, (ast.For, ast.comprehension)):
            iterable = self.resolve(node.iter)
            element = iterable.value if iterable is not None and iterable.kind == "list" else None
            self.bind(node.target, element, node.iter)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.statement(child)
            else:
                self.expression(child)

    def expression(self, node: ast.AST) -> None:
        """Check every call and attribute read under node (comprehension variables first)."""
        for generator in (n for n in ast.walk(node) if isinstance(n, ast.comprehension)):
            self.statement(generator)  # type: ignore[arg-type]
        for child in ast.walk(node):
            if isinstance(child, ast.Call) or (
                isinstance(child, ast.Attribute) and isinstance(child.ctx, ast.Load)
            ):
                self.resolve(child)


def main(argv: list[str]) -> int:
    path, sdk = argv
    warnings.simplefilter("ignore")
    checker = Checker(sdk)
    with contextlib.redirect_stdout(sys.stderr):  # the SDK prints as it imports: keep the report
        for number, source in _sources(path):
            checker.cell = number
            for node in ast.parse(source).body:
                checker.statement(node)
    from importlib.metadata import version

    report = {
        "version": version("sagemaker"),
        "network": sorted(name for _, name in socket.if_nameindex()),  # the test wants ["lo"]
        "checked": sorted(set(checker.checked)),
        "errors": list(dict.fromkeys(checker.errors)),  # each once (nodes are visited again)
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
