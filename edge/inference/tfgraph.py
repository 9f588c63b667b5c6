"""A minimal reader for TensorFlow frozen ``GraphDef`` files (``*.pb``), without TensorFlow.

Only the protobuf wire format is decoded (varint, 64-bit, length-delimited and 32-bit wire
types, packed and unpacked repeated scalars) and only the fields a frozen inference graph
needs:

* ``GraphDef.node`` (1) -> :class:`Node` ``(name, op, inputs, device, attrs)``;
* ``NodeDef.attr`` (5, ``map<string, AttrValue>``) -> ``attrs[key]`` is a plain Python value:
  ``bytes`` (s), ``int`` (i, and ``type``: a TF DataType number), ``float`` (f), ``bool`` (b),
  a shape as a tuple of ints (``-1`` for an unknown dimension, ``None`` for an unknown rank),
  a ``numpy.ndarray`` (tensor), or an :class:`AttrList` (list);
* ``TensorProto`` -> ``numpy.ndarray`` with the TF dtype and shape, from ``tensor_content``
  (raw little-endian bytes) or from the typed ``*_val`` fields, including TF's short form in
  which a single value stands for the whole tensor.

Anything truncated or malformed raises :class:`ValueError` naming what was being read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

# TF DataType enum -> numpy dtype (little-endian, as tensor_content is stored).
TF_DTYPES: Dict[int, Any] = {
    1: np.dtype("<f4"),   # DT_FLOAT
    2: np.dtype("<f8"),   # DT_DOUBLE
    3: np.dtype("<i4"),   # DT_INT32
    4: np.dtype("u1"),    # DT_UINT8
    5: np.dtype("<i2"),   # DT_INT16
    6: np.dtype("i1"),    # DT_INT8
    9: np.dtype("<i8"),   # DT_INT64
    10: np.dtype("?"),    # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_STRING = 7

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass
class AttrList:
    """``AttrValue.list``: each field holds the values in file order."""

    s: List[bytes] = field(default_factory=list)
    i: List[int] = field(default_factory=list)
    f: List[float] = field(default_factory=list)
    b: List[bool] = field(default_factory=list)
    type: List[int] = field(default_factory=list)
    shape: List[Optional[Tuple[int, ...]]] = field(default_factory=list)
    tensor: List[np.ndarray] = field(default_factory=list)


@dataclass
class Node:
    """One ``NodeDef``. ``inputs`` keep TF's spelling (``"name"``, ``"name:1"``, ``"^ctrl"``)."""

    name: str
    op: str
    inputs: List[str]
    attrs: Dict[str, Any]
    device: str = ""


# ---------------------------------------------------------------------------- wire format

def read_varint(buf: bytes, pos: int, what: str = "varint") -> Tuple[int, int]:
    """Decode an unsigned base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated protobuf: %s runs past the end of the data" % what)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("corrupt protobuf: %s is longer than 10 bytes" % what)


def _signed64(value: int) -> int:
    """Protobuf int32/int64 fields store negatives as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf: bytes, what: str = "message") -> Iterator[Tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` for each field of one message.

    ``value`` is an int for varints, ``bytes`` for length-delimited,
    and the raw 4 or 8 bytes for the fixed-width wire types.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos, "field key in " + what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("corrupt protobuf: field number 0 in %s" % what)
        if wire == _VARINT:
            value, pos = read_varint(buf, pos, "field %d of %s" % (number, what))
        elif wire == _I64 or wire == _I32:
            size = 8 if wire == _I64 else 4
            if pos + size > end:
                raise ValueError("truncated protobuf: field %d of %s needs %d bytes, %d left"
                                 % (number, what, size, end - pos))
            value, pos = buf[pos:pos + size], pos + size
        elif wire == _LEN:
            size, pos = read_varint(buf, pos, "length of field %d of %s" % (number, what))
            if pos + size > end:
                raise ValueError("truncated protobuf: field %d of %s claims %d bytes, %d left"
                                 % (number, what, size, end - pos))
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError("corrupt protobuf: unsupported wire type %d (field %d of %s)"
                             % (wire, number, what))
        yield number, wire, value


def _scalars(wire: int, value: Any, kind: str, what: str) -> List[Any]:
    """Values of a repeated scalar field, packed (one LEN field) or not (one value per field).

    ``kind``: ``"float"`` (32-bit), ``"double"`` (64-bit), ``"int"`` (varint, signed 64),
    ``"uint"`` (varint), ``"bool"``.
    """
    fixed = {"float": (_I32, "<f", 4), "double": (_I64, "<d", 8)}
    if kind in fixed:
        wtype, fmt, size = fixed[kind]
        if wire == wtype:
            return [struct.unpack(fmt, value)[0]]
        if wire == _LEN:
            if len(value) % size:
                raise ValueError("corrupt protobuf: packed %s of %d bytes in %s is not a multiple of %d"
                                 % (kind, len(value), what, size))
            return np.frombuffer(value, dtype=fmt).tolist()
    else:
        if wire == _VARINT:
            raw = [value]
        elif wire == _LEN:
            raw, pos = [], 0
            while pos < len(value):
                v, pos = read_varint(value, pos, "packed %s in %s" % (kind, what))
                raw.append(v)
        else:
            raw = None
        if raw is not None:
            if kind == "int":
                return [_signed64(v) for v in raw]
            if kind == "bool":
                return [bool(v) for v in raw]
            return raw
    raise ValueError("corrupt protobuf: %s field in %s has wire type %d" % (kind, what, wire))


def _string(wire: int, value: Any, what: str) -> bytes:
    if wire != _LEN:
        raise ValueError("corrupt protobuf: %s should be length-delimited, has wire type %d" % (what, wire))
    return bytes(value)


def _utf8(wire: int, value: Any, what: str) -> str:
    raw = _string(wire, value, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("corrupt protobuf: %s is not UTF-8 text" % what) from None


# ---------------------------------------------------------------------------- messages

def parse_shape(buf: bytes) -> Optional[Tuple[int, ...]]:
    """``TensorShapeProto`` -> tuple of sizes (``-1`` unknown), or ``None`` if the rank is unknown."""
    dims: List[int] = []
    unknown_rank = False
    for number, wire, value in iter_fields(buf, "TensorShapeProto"):
        if number == 2:  # dim
            size = 0
            for n2, w2, v2 in iter_fields(_string(wire, value, "TensorShapeProto.dim"), "Dim"):
                if n2 == 1:
                    size = _scalars(w2, v2, "int", "Dim.size")[-1]
            dims.append(size)
        elif number == 3:
            unknown_rank = bool(_scalars(wire, value, "bool", "unknown_rank")[-1])
    return None if unknown_rank else tuple(dims)


# TensorProto field number -> (element kind, wire decoding) for the typed value fields.
_VAL_FIELDS = {5: "float", 6: "double", 7: "int", 10: "int", 11: "bool", 16: "uint", 17: "uint"}


def parse_tensor(buf: bytes) -> np.ndarray:
    """``TensorProto`` -> ``numpy.ndarray`` with TF's dtype and shape.

    Strings (DT_STRING) become an object array of ``bytes``. When the typed value field holds
    fewer values than the shape needs, TF repeats the last value (a one-value field is a
    broadcast constant); an empty field means zeros.
    """
    dtype_num = 0
    shape: Optional[Tuple[int, ...]] = ()
    content: Optional[bytes] = None
    vals: List[Any] = []
    strings: List[bytes] = []
    half_vals: List[int] = []
    for number, wire, value in iter_fields(buf, "TensorProto"):
        if number == 1:
            dtype_num = _scalars(wire, value, "uint", "TensorProto.dtype")[-1]
        elif number == 2:
            shape = parse_shape(_string(wire, value, "TensorProto.tensor_shape"))
        elif number == 4:
            content = _string(wire, value, "TensorProto.tensor_content")
        elif number == 8:
            strings.append(_string(wire, value, "TensorProto.string_val"))
        elif number == 13:  # half_val: bit patterns of float16 in int32 varints
            half_vals.extend(_scalars(wire, value, "uint", "TensorProto.half_val"))
        elif number in _VAL_FIELDS:
            vals.extend(_scalars(wire, value, _VAL_FIELDS[number], "TensorProto field %d" % number))
    if shape is None or any(d < 0 for d in shape):
        raise ValueError("a constant tensor has an unknown shape %s" % (shape,))
    count = int(np.prod(shape, dtype=np.int64))
    if dtype_num == DT_STRING:
        arr = np.empty(count, dtype=object)
        for k in range(count):
            arr[k] = strings[min(k, len(strings) - 1)] if strings else b""
        return arr.reshape(shape)
    if dtype_num not in TF_DTYPES:
        raise ValueError("a constant tensor has TF dtype %d, which this reader does not handle "
                         "(supported: %s)" % (dtype_num, sorted(TF_DTYPES)))
    dtype = TF_DTYPES[dtype_num]
    if content is not None:
        if len(content) != count * dtype.itemsize:
            raise ValueError("corrupt tensor: tensor_content has %d bytes but shape %s of %s needs %d"
                             % (len(content), shape, dtype, count * dtype.itemsize))
        return np.frombuffer(content, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if dtype_num == 19:
        arr = np.array(half_vals, dtype=np.uint16).view(np.float16)
    else:
        arr = np.array(vals, dtype=dtype.newbyteorder("="))
    if arr.size > count:
        raise ValueError("corrupt tensor: %d values for shape %s" % (arr.size, shape))
    if arr.size < count:
        fill = arr[-1] if arr.size else np.zeros((), arr.dtype)
        arr = np.concatenate([arr, np.full(count - arr.size, fill, dtype=arr.dtype)])
    return arr.reshape(shape)


def _parse_list(buf: bytes) -> AttrList:
    out = AttrList()
    for number, wire, value in iter_fields(buf, "AttrValue.ListValue"):
        if number == 2:
            out.s.append(_string(wire, value, "list.s"))
        elif number == 3:
            out.i.extend(_scalars(wire, value, "int", "list.i"))
        elif number == 4:
            out.f.extend(_scalars(wire, value, "float", "list.f"))
        elif number == 5:
            out.b.extend(_scalars(wire, value, "bool", "list.b"))
        elif number == 6:
            out.type.extend(_scalars(wire, value, "uint", "list.type"))
        elif number == 7:
            out.shape.append(parse_shape(_string(wire, value, "list.shape")))
        elif number == 8:
            out.tensor.append(parse_tensor(_string(wire, value, "list.tensor")))
    return out


def parse_attr(buf: bytes) -> Any:
    """``AttrValue`` -> the value of its oneof (see the module docstring); ``None`` if empty."""
    result: Any = None
    for number, wire, value in iter_fields(buf, "AttrValue"):
        if number == 1:
            result = _parse_list(_string(wire, value, "AttrValue.list"))
        elif number == 2:
            result = _string(wire, value, "AttrValue.s")
        elif number == 3:
            result = _scalars(wire, value, "int", "AttrValue.i")[-1]
        elif number == 4:
            result = _scalars(wire, value, "float", "AttrValue.f")[-1]
        elif number == 5:
            result = _scalars(wire, value, "bool", "AttrValue.b")[-1]
        elif number == 6:
            result = _scalars(wire, value, "uint", "AttrValue.type")[-1]
        elif number == 7:
            result = parse_shape(_string(wire, value, "AttrValue.shape"))
        elif number == 8:
            result = parse_tensor(_string(wire, value, "AttrValue.tensor"))
    return result


def parse_node(buf: bytes) -> Node:
    """``NodeDef`` -> :class:`Node`."""
    name, op, device = "", "", ""
    inputs: List[str] = []
    attrs: Dict[str, Any] = {}
    for number, wire, value in iter_fields(buf, "NodeDef"):
        if number == 1:
            name = _utf8(wire, value, "NodeDef.name")
        elif number == 2:
            op = _utf8(wire, value, "NodeDef.op")
        elif number == 3:
            inputs.append(_utf8(wire, value, "NodeDef.input"))
        elif number == 4:
            device = _utf8(wire, value, "NodeDef.device")
        elif number == 5:  # map entry: key = 1, value = 2
            key, attr = "", None
            for n2, w2, v2 in iter_fields(_string(wire, value, "NodeDef.attr"), "NodeDef.attr entry"):
                if n2 == 1:
                    key = _utf8(w2, v2, "attr key")
                elif n2 == 2:
                    attr = parse_attr(_string(w2, v2, "attr value"))
            attrs[key] = attr
    where = " (node %r)" % name if name else ""
    if not name or not op:
        raise ValueError("corrupt GraphDef: a node has no %s%s" % ("name" if not name else "op", where))
    return Node(name=name, op=op, inputs=inputs, attrs=attrs, device=device)


def parse_graphdef(data: Union[bytes, bytearray, memoryview]) -> List[Node]:
    """A serialised ``GraphDef`` -> its nodes in file order.

    Raises ValueError when the bytes are truncated, corrupt, or hold no node at all (which
    usually means the file is not a frozen TF graph).
    """
    buf = bytes(data)
    nodes: List[Node] = []
    for number, wire, value in iter_fields(buf, "GraphDef"):
        if number == 1:
            try:
                nodes.append(parse_node(_string(wire, value, "GraphDef.node")))
            except ValueError as exc:
                raise ValueError("%s (in node #%d of the GraphDef)" % (exc, len(nodes))) from None
    if not nodes:
        raise ValueError("the data holds no GraphDef nodes: is it a frozen TensorFlow graph (.pb)?")
    return nodes
