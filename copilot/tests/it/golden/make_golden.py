#!/usr/bin/env python3
"""Writes the golden FlyteIDL messages used by copilot/tests/it/golden.rs.

The bytes come from an encoder independent of copilot: the `flyteidl`
package from PyPI (Google's protobuf runtime), with deterministic
serialization (map entries sorted by key, as copilot's BTreeMap maps are).

    python3 -m venv /tmp/venv-flyteidl
    /tmp/venv-flyteidl/bin/pip install flyteidl==1.16.8
    /tmp/venv-flyteidl/bin/python copilot/tests/it/golden/make_golden.py
"""
import os

from flyteidl.core import errors_pb2, execution_pb2, interface_pb2, literals_pb2, types_pb2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

HERE = os.path.dirname(os.path.abspath(__file__))


def prim(**kw):
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(**kw)))


def scalar(**kw):
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(**kw))


def blob(uri, fmt, multipart):
    dim = types_pb2.BlobType.MULTIPART if multipart else types_pb2.BlobType.SINGLE
    return scalar(blob=literals_pb2.Blob(
        uri=uri, metadata=literals_pb2.BlobMetadata(type=types_pb2.BlobType(format=fmt, dimensionality=dim))))


def primitives():
    return literals_pb2.LiteralMap(literals={
        "i": prim(integer=-42),
        "f": prim(float_value=2.5),
        "s": prim(string_value="hello"),
        "b": prim(boolean=True),
        "dt": prim(datetime=timestamp_pb2.Timestamp(seconds=1704164645, nanos=500000000)),
        "dur": prim(duration=duration_pb2.Duration(seconds=3723, nanos=500000000)),
    })


def mixed():
    generic = struct_pb2.Struct()
    generic.update({"a": 1, "b": ["x", True]})
    int_type = types_pb2.LiteralType(simple=types_pb2.INTEGER)
    return literals_pb2.LiteralMap(literals={
        "blob": blob("s3://bucket/raw/file.csv", "csv", False),
        "dir": blob("s3://bucket/raw/dir", "", True),
        "files": literals_pb2.Literal(collection=literals_pb2.LiteralCollection(literals=[
            blob("s3://bucket/raw/a.txt", "", False), blob("s3://bucket/raw/b.txt", "", False)])),
        "nested": literals_pb2.Literal(map=literals_pb2.LiteralMap(literals={
            "x": prim(integer=1), "y": prim(string_value="why")})),
        "none": scalar(none_type=literals_pb2.Void()),
        "bin": scalar(binary=literals_pb2.Binary(value=b"\x81\xa1a\x01", tag="msgpack")),
        "g": scalar(generic=generic),
        "err": scalar(error=types_pb2.Error(failed_node_id="n0", message="bad")),
        "u": scalar(union=literals_pb2.Union(value=prim(integer=5), type=int_type)),
        "schema": scalar(schema=literals_pb2.Schema(uri="s3://bucket/raw/schema", type=types_pb2.SchemaType(columns=[
            types_pb2.SchemaType.SchemaColumn(name="c", type=types_pb2.SchemaType.SchemaColumn.FLOAT)]))),
        "sd": scalar(structured_dataset=literals_pb2.StructuredDataset(
            uri="s3://bucket/raw/sd", metadata=literals_pb2.StructuredDatasetMetadata(
                structured_dataset_type=types_pb2.StructuredDatasetType(format="parquet")))),
        "off": literals_pb2.Literal(offloaded_metadata=literals_pb2.LiteralOffloadedMetadata(
            uri="s3://bucket/off/lit", size_bytes=1234, inferred_type=int_type)),
        "meta": literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=3)),
                                     hash="abc", metadata={"k1": "v1", "k0": "v0"}),
    })


def interface():
    var = lambda t: interface_pb2.Variable(type=t, description="d")
    return interface_pb2.TypedInterface(
        inputs=interface_pb2.VariableMap(variables={
            "a": var(types_pb2.LiteralType(simple=types_pb2.STRING)),
            "b": var(types_pb2.LiteralType(blob=types_pb2.BlobType(format="csv", dimensionality=types_pb2.BlobType.MULTIPART))),
        }),
        outputs=interface_pb2.VariableMap(variables={
            "o": var(types_pb2.LiteralType(collection_type=types_pb2.LiteralType(map_value_type=types_pb2.LiteralType(simple=types_pb2.FLOAT)))),
            "u": var(types_pb2.LiteralType(union_type=types_pb2.UnionType(variants=[
                types_pb2.LiteralType(simple=types_pb2.INTEGER, structure=types_pb2.TypeStructure(tag="int")),
                types_pb2.LiteralType(simple=types_pb2.NONE)]))),
            "e": var(types_pb2.LiteralType(enum_type=types_pb2.EnumType(values=["x", "y"]))),
        }),
    )


def error_document():
    return errors_pb2.ErrorDocument(error=errors_pb2.ContainerError(
        code="InputDownloadFailed", message="boom", kind=errors_pb2.ContainerError.RECOVERABLE,
        origin=execution_pb2.ExecutionError.SYSTEM, timestamp=timestamp_pb2.Timestamp(seconds=1700000000), worker="pod-1"))


for name, msg in [("primitives", primitives()), ("mixed", mixed()), ("interface", interface()),
                  ("error_document", error_document())]:
    with open(os.path.join(HERE, name + ".pb"), "wb") as f:
        f.write(msg.SerializeToString(deterministic=True))
    print(name, len(msg.SerializeToString(deterministic=True)), "bytes")
