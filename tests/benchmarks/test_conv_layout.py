from benchmarks import conv_layout


def test_both_layouts_train_a_step_and_the_ratio_is_theirs():
    result = conv_layout.measure(rounds=2, steps=1)
    nhwc, nchw = result["ms_per_round"]["NHWC"], result["ms_per_round"]["NCHW"]
    assert len(nhwc) == len(nchw) == 2 and min(nhwc + nchw) > 0
    ratios = sorted(b / a for a, b in zip(nhwc, nchw))
    assert abs(result["nchw_over_nhwc"] - sum(ratios) / 2) < 1e-9  # the median of two
    assert f"NCHW takes {result['nchw_over_nhwc']:.2f}x" in conv_layout.render(result)
