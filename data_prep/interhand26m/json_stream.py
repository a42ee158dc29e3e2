"""The members of a JSON file's top-level object, read in bounded memory with the standard library.

InterHand2.6M's annotation files are one JSON object each: data.json holds two long arrays
(`images`, `annotations`), camera.json, joint_3d.json and MANO_NeuralAnnot.json one member per
capture. `top_level_members` yields those members one at a time, and the elements of the arrays
named in `arrays` one at a time, so memory holds one member (or one element) plus the read buffer.

Each value is decoded by `json.JSONDecoder.raw_decode` (the C decoder of `json.load`) straight from
a text buffer that grows only while a value is cut by its end, so values are exactly what
`json.load` gives (NaN, Infinity and -Infinity included) at its speed: about 7x faster than
building the same objects with ijson's C backend on data.json (docs/benchmarks.md).
"""

import json
from typing import Any, Iterator, TextIO

CHUNK_CHARS = 1 << 22  # characters read at a time (a value longer than that grows the read)
# A decoding error this far before the buffer's end is damage, not a value cut by the end (the
# files' strings are far shorter; an unterminated string is reported where it starts).
_CUT_MARGIN_CHARS = 1 << 16
_NUMBER_TAIL_CHARS = 32  # a number's fraction or exponent cut by the buffer's end is shorter than this
_WHITESPACE = ' \t\n\r'
_DECODE = json.JSONDecoder().raw_decode


class JsonStreamError(ValueError):
  """The text is not one valid JSON object (truncated, damaged, or another kind of value)."""


class _Text:
  """A text file as a buffer that is refilled from the file as values are consumed."""

  def __init__(self, f: TextIO, chunk_chars: int):
    self._f, self._chunk_chars = f, chunk_chars
    self._buffer, self._at, self._eof = '', 0, False
    self._dropped = 0  # characters of the file before the buffer

  def _read_more(self, at_least: int = 0) -> bool:
    """Drops what was consumed and appends at least `at_least` characters; False at the end."""
    chunk = self._f.read(max(self._chunk_chars, at_least))
    if not chunk:
      self._eof = True
      return False
    self._dropped += self._at
    self._buffer, self._at = self._buffer[self._at :] + chunk, 0
    return True

  def peek(self) -> str:
    """The next character that is not whitespace ('' at the end of the file)."""
    while True:
      while self._at < len(self._buffer) and self._buffer[self._at] in _WHITESPACE:
        self._at += 1
      if self._at < len(self._buffer) or not self._read_more():
        return self._buffer[self._at : self._at + 1]

  def expect(self, token: str) -> None:
    found = self.peek()
    if found != token:
      raise JsonStreamError(
          f'expected {token!r} at character {self._dropped + self._at}, found ' f'{found or "the end of the file"!r}'
      )
    self._at += 1

  def another(self, close: str) -> bool:
    """After a member or element: True when a ',' follows (consumed), False when `close` does
    (consumed); anything else is an error."""
    if self.peek() == ',':
      self.expect(',')
      return True
    self.expect(close)
    return False

  def value(self) -> Any:
    """The next JSON value. A value the buffer's end may have cut is decoded again with more text
    (a number would otherwise read short); the read doubles while it is cut."""
    self.peek()
    while True:
      try:
        value, end = _DECODE(self._buffer, self._at)
      except json.JSONDecodeError as e:
        if len(self._buffer) - e.pos < _CUT_MARGIN_CHARS and self._read_more(len(self._buffer)):
          continue
        raise JsonStreamError(f'{e.msg} at character {self._dropped + e.pos}') from e
      if not self._may_be_cut(value, end) or self._eof or not self._read_more(len(self._buffer)):
        self._at = end
        return value

  def _may_be_cut(self, value: Any, end: int) -> bool:
    """Whether the buffer's end may have cut the value: it reaches the end, or it is a number
    followed near the end by what would continue it ('1.' or '1.5e' decode as 1 and 1.5)."""
    if end >= len(self._buffer):
      return True
    return (
        isinstance(value, (int, float)) and self._buffer[end] in '.eE' and len(self._buffer) - end < _NUMBER_TAIL_CHARS
    )


def top_level_members(
    f: TextIO, arrays: tuple[str, ...] = (), chunk_chars: int = CHUNK_CHARS
) -> Iterator[tuple[str, Any]]:
  """(key, value) of each member of the file's top-level object, in file order.

  Args:
    f: the file, opened as text.
    arrays: keys whose value must be an array: each of its elements is yielded as (key, element)
      instead of the whole array.
    chunk_chars: characters read at a time.

  Raises:
    JsonStreamError: the text is not a JSON object, is truncated or damaged, or a key of `arrays`
      holds something other than an array.
  """
  text = _Text(f, chunk_chars)
  text.expect('{')
  if text.peek() == '}':
    text.expect('}')
  else:
    while True:
      key = text.value()
      if not isinstance(key, str):
        raise JsonStreamError(f'expected a member name, found {key!r}')
      text.expect(':')
      if key in arrays:
        if text.peek() != '[':
          raise JsonStreamError(f'{key!r} is not an array')
        text.expect('[')
        if text.peek() == ']':
          text.expect(']')
        else:
          while True:
            yield key, text.value()
            if not text.another(']'):
              break
      else:
        yield key, text.value()
      if not text.another('}'):
        break
  if text.peek():
    raise JsonStreamError(f'unexpected {text.peek()!r} after the top-level object')
