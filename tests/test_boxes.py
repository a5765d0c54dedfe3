import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from uld import boxes


def test_iou_plain_and_plus1():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10]])
    assert boxes.iou(a, b)[0, 0] == 50 / 150
    # +1 convention: widths 11, overlap 6 x 11 = 66, union 121 + 121 - 66 = 176
    assert boxes.iou_plus1(a, b)[0, 0] == 66 / 176


def test_iou_empty_shapes():
    assert boxes.iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert boxes.as_boxes([]).shape == (0, 4)


box = st.tuples(
    st.floats(0, 50), st.floats(0, 50), st.floats(1, 50), st.floats(1, 50)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@given(st.lists(box, min_size=1, max_size=5), st.lists(box, min_size=1, max_size=5))
def test_iou_is_symmetric_and_bounded(a, b):
    m = boxes.iou(np.array(a), np.array(b))
    assert np.allclose(m, boxes.iou(np.array(b), np.array(a)).T)
    assert ((m >= 0) & (m <= 1 + 1e-12)).all()
    assert np.allclose(np.diag(boxes.iou(np.array(a), np.array(a))), 1.0)
