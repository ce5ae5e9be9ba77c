"""The saved sketch: round trip, and a sketch whose hashes cannot be rebuilt is refused."""
import numpy as np
import pytest

from tests.sketch_helpers import FAMILIES, emb, params
from transforms.sketch_counts import sketch_from_embeddings
from transforms.sketch_io import load_sketch, save_sketch


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(tmp_path, family):
  p = params(family=family)
  x = emb(50)
  sketch = sketch_from_embeddings([x], p)
  path = str(tmp_path / "sub" / "sketch.npz")
  save_sketch(sketch, path)
  back = load_sketch(path)
  assert back.params == p and back.n == 50
  np.testing.assert_array_equal(back.counts, sketch.counts)
  np.testing.assert_array_equal(back.density(x), sketch.density(x))
  # an artifact whose hashes cannot be rebuilt from its params is refused
  with np.load(path) as data:
    fields = dict(data)
  fields["fingerprint"] = np.array("0" * 32)
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, **fields)
  with pytest.raises(ValueError, match="differ"):
    load_sketch(bad)
  assert load_sketch(bad, verify=False).n == 50
