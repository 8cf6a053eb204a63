"""Tracking details that need no sweep."""

from finalbn.tracking import redact


def test_credentials_in_a_tracking_uri_never_reach_the_output() -> None:
    assert redact("https://alice:s3cret@mlflow.example.org/") == "https://***@mlflow.example.org/"
    assert redact("http://token@host:5000") == "http://***@host:5000"
    assert redact("sqlite:////home/alice/mlruns.db") == "sqlite:////home/alice/mlruns.db"
