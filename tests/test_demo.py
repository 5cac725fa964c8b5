"""The command-line demo trains to a useful accuracy on real MNIST."""

import pytest

from fastnn.__main__ import main
from test_datasets import MNIST_DIR, needs_mnist


@needs_mnist
def test_demo_learns_mnist(capsys):
    assert main(["demo", "--data", str(MNIST_DIR), "--epochs", "1", "--limit", "6000"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.rsplit("test accuracy", 1)[1].split()[0])
    assert accuracy > 0.88, out


def test_demo_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["bogus"])
