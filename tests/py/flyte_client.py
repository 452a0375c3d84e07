"""flytekit as the client of copilot's data plane, for the integration tests.

Subcommands (all JSON on stdout):
  inputs STORE_DIR OUT_PB   make inputs.pb from Python values with flytekit's
                            TypeEngine (blobs uploaded into STORE_DIR/raw with
                            flytekit's own FileAccessProvider); print the values.
  interface                 print the base64 TypedInterface of the outputs below.
  outputs OUTPUTS_PB        read outputs.pb back into Python values with
                            TypeEngine (blobs downloaded by flytekit); print them.
  scalars OUT_PB JSON       make inputs.pb from a JSON object of ints, floats,
                            strings and bools, each by TypeEngine for its type.
  values OUTPUTS_PB IFACE   the same for any task: the Python types are the ones
                            TypeEngine guesses from the base64 TypedInterface IFACE.
"""
import base64
import datetime
import json
import os
import sys
import tempfile
import typing

from flytekit import FlyteContextManager
from flytekit.core.data_persistence import FileAccessProvider
from flytekit.core.interface import Interface, transform_interface_to_typed_interface
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

OUTPUTS = {
    "n": int,
    "f": float,
    "s": str,
    "b": bool,
    "t": datetime.datetime,
    "d": datetime.timedelta,
    "xs": typing.List[int],
    "blob": FlyteFile,
    "dir": FlyteDirectory,
}


def context(store_dir):
    ctx = FlyteContextManager.current_context()
    provider = FileAccessProvider(
        local_sandbox_dir=tempfile.mkdtemp(),
        raw_output_prefix=os.path.join(store_dir, "raw"),
    )
    return ctx.with_file_access(provider).build()


def plain(value):
    """A JSON-comparable form of a Python value (blobs by their content)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in sorted(value.items())}
    if isinstance(value, FlyteDirectory):
        path = value.download()
        out = {}
        for root, _, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                with open(full, encoding="utf-8") as f:
                    out[os.path.relpath(full, path)] = f.read()
        return {"dir": dict(sorted(out.items()))}
    if isinstance(value, FlyteFile):
        with open(value.download(), encoding="utf-8") as f:
            return {"file": f.read()}
    raise TypeError(f"no plain form for {type(value)}")


def make_inputs(store_dir, out_pb):
    ctx = context(store_dir)
    src = tempfile.mkdtemp()
    blob = os.path.join(src, "data.csv")
    with open(blob, "w", encoding="utf-8") as f:
        f.write("a,b\n1,2\n")
    folder = os.path.join(src, "folder")
    os.makedirs(os.path.join(folder, "sub"))
    for rel, text in [("one.txt", "1"), ("sub/two.txt", "2")]:
        with open(os.path.join(folder, rel), "w", encoding="utf-8") as f:
            f.write(text)
    values = {
        "n": (42, int),
        "f": (2.5, float),
        "whole": (3.0, float),
        "s": ("hello world", str),
        "b": (True, bool),
        "t": (datetime.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=datetime.timezone.utc), datetime.datetime),
        "d": (datetime.timedelta(hours=1, minutes=2, seconds=3.5), datetime.timedelta),
        "xs": ([1, 2, 3], typing.List[int]),
        "m": ({"a": 1, "b": 2}, typing.Dict[str, int]),
        "blob": (FlyteFile(blob), FlyteFile),
        "dir": (FlyteDirectory(folder), FlyteDirectory),
    }
    literals = {}
    for name, (value, ty) in values.items():
        literals[name] = TypeEngine.to_literal(ctx, value, ty, TypeEngine.to_literal_type(ty))
    with open(out_pb, "wb") as f:
        f.write(LiteralMap(literals).to_flyte_idl().SerializeToString())
    print(json.dumps({k: plain(v) for k, (v, _) in values.items()}, sort_keys=True))


def interface():
    typed = transform_interface_to_typed_interface(Interface(outputs=OUTPUTS))
    print(base64.b64encode(typed.to_flyte_idl().SerializeToString()).decode())


def print_values(outputs_pb, types):
    """Reads outputs.pb and prints each output as the Python value of its type."""
    from flyteidl.core import literals_pb2

    msg = literals_pb2.LiteralMap()
    with open(outputs_pb, "rb") as f:
        msg.ParseFromString(f.read())
    lm = LiteralMap.from_flyte_idl(msg)
    ctx = context(tempfile.mkdtemp())
    out = {}
    for name, ty in types.items():
        out[name] = plain(TypeEngine.to_python_value(ctx, lm.literals[name], ty))
    print(json.dumps(out, sort_keys=True))


def read_outputs(outputs_pb):
    print_values(outputs_pb, OUTPUTS)


def make_scalars(out_pb, values_json):
    ctx = FlyteContextManager.current_context()
    literals = {}
    for name, value in json.loads(values_json).items():
        ty = type(value)
        literals[name] = TypeEngine.to_literal(ctx, value, ty, TypeEngine.to_literal_type(ty))
    with open(out_pb, "wb") as f:
        f.write(LiteralMap(literals).to_flyte_idl().SerializeToString())


def read_values(outputs_pb, typed_interface_b64):
    from flyteidl.core import interface_pb2
    from flytekit.models.types import LiteralType

    iface = interface_pb2.TypedInterface()
    iface.ParseFromString(base64.b64decode(typed_interface_b64))
    types = {
        name: TypeEngine.guess_python_type(LiteralType.from_flyte_idl(var.type))
        for name, var in iface.outputs.variables.items()
    }
    print_values(outputs_pb, types)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "inputs": make_inputs,
        "interface": interface,
        "outputs": read_outputs,
        "scalars": make_scalars,
        "values": read_values,
    }[command](*args)
