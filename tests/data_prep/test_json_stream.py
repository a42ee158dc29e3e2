"""`json_stream.top_level_members`: json.load's values at any read size, damage named, memory bounded."""

import io
import json
import math

import pytest

from data_prep.interhand26m import json_stream

DOCUMENT = {
    'info': {'version': 'v1.0', 'nested': [[1, 2], {'a': None}], 'flags': [True, False]},
    'images': [
        {'id': i, 'file_name': f'Capture0/seq/cam40{i}/image{i:05d}.jpg', 'width': 334, 'height': 512} for i in range(7)
    ],
    'annotations': [
        {'id': 0, 'bbox': [1.5, -2.25e-3, 123456789, 4.0], 'joint_valid': [[1], [0]]},
        {'id': 1, 'bbox': [float('nan'), float('inf'), -float('inf'), 0.1]},
        {'id': 2, 's': 'x NaN " \\" ] } [ { , : -Infinity \\\\', 'u': '\u00e9\u4e2d\U0001f600'},
    ],
    'empty': [],
    'number': 12345678901234567890,
    'last': -0.000123,
}


def _members(text, arrays, chunk_chars):
  return list(json_stream.top_level_members(io.StringIO(text), arrays, chunk_chars=chunk_chars))


def _same(a, b):
  """Equality that counts NaN equal to NaN."""
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
    return math.isnan(b)
  if isinstance(a, dict):
    return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, list):
    return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return type(a) is type(b) and a == b


@pytest.mark.parametrize('chunk_chars', [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize('indent', [None, 2])
def test_members_equal_json_load_at_any_read_size(chunk_chars, indent):
  text = json.dumps(DOCUMENT, indent=indent, ensure_ascii=False)
  members = _members(text, ('images', 'annotations', 'empty'), chunk_chars)
  expected = [(key, value) for key, value in json.loads(text).items() if key not in ('images', 'annotations', 'empty')]
  expected[1:1] = [('images', image) for image in DOCUMENT['images']] + [
      ('annotations', annotation) for annotation in json.loads(text)['annotations']
  ]
  assert [key for key, _ in members] == [key for key, _ in expected]
  assert all(_same(a, b) for (_, a), (_, b) in zip(members, expected))
  whole = _members(text, (), chunk_chars)
  assert _same(dict(whole), json.loads(text))


def test_a_number_cut_by_the_read_is_read_whole():
  text = '{"a": 1234567, "b": [98765, -1.5e-7]}'
  for chunk_chars in range(1, len(text) + 1):
    assert _members(text, ('b',), chunk_chars) == [('a', 1234567), ('b', 98765), ('b', -1.5e-7)]


@pytest.mark.parametrize(
    'text, message',
    [
        ('{"images": [{"id": 1}, {"id": 2', 'at character'),  # truncated inside an element
        ('{"images": [{"id": 1}]', "expected '}'"),  # truncated after a member
        ('', "expected '{'"),
        ('[1, 2]', "expected '{'"),  # not an object
        ('{"images": {"id": 1}}', "'images' is not an array"),
        ('{"a": 1} x', "unexpected 'x'"),
        ('{"a": 1,, "b": 2}', 'at character'),
        ('{1: 2}', 'expected a member name'),
    ],
)
def test_damage_is_an_error(text, message):
  with pytest.raises(json_stream.JsonStreamError, match=message):
    _members(text, ('images',), 7)


def test_damage_far_from_the_read_end_is_reported_without_reading_on():
  """Damage early in a long file raises before the rest of the file is read into memory."""
  text = '{"images": [{"id": 1}, {"id": 2 x}, ' + ', '.join(['{"id": 3}'] * 200_000) + ']}'
  f = io.StringIO(text)
  with pytest.raises(json_stream.JsonStreamError, match='at character 32'):
    list(json_stream.top_level_members(f, ('images',), chunk_chars=1 << 17))
  assert f.tell() < 4 * (1 << 17) < len(text)
