from compress.train import evaluate


def test_trained_lenet_fixture_is_accurate(lenet, mnist5k):
    assert evaluate(lenet, mnist5k.test)["acc_top1"] > 0.93
