"""Ray cluster-launcher configs, checked and completed the way `ray up` does it.

Before `ray up` contacts a cloud it runs Ray's ``prepare_config`` (merge the
provider's defaults.yaml, translate an on-premise head_ip/worker_ips list into
node types, merge the setup commands, set per-type worker limits) and then
``validate_config`` (Ray's JSON schema plus its cross-field rules).
:func:`load_cluster_config` runs exactly those two steps and nothing that needs
an account, so a file it accepts can still fail `ray up` only for cloud-side
reasons (credentials, quotas, the image, the network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import jsonschema
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


class ClusterConfigError(ValueError):
    """A cluster YAML that `ray up` would reject; the message is one line naming the file."""


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """The cluster config at ``path``, with Ray's defaults filled in, after Ray's validation."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise _error(path, error) from None
    if not isinstance(raw, dict):
        raise _error(path, f"expected a mapping of cluster settings, found {type(raw).__name__}")
    try:
        config = prepare_config(raw)
        validate_config(config)
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "top level"
        raise _error(path, f"{where}: {error.message}") from None
    except KeyError as error:
        raise _error(path, f"missing required key {error}") from None
    except click.ClickException as error:
        # Ray's on-premise preparation aborts through its CLI logger.
        raise _error(path, error.message) from None
    except (ValueError, RuntimeError, AssertionError) as error:
        raise _error(path, error) from None
    return config


def canonical_yaml(path: str | Path) -> str:
    """The validated, defaults-filled config as sorted YAML: what the golden files hold."""
    return yaml.safe_dump(load_cluster_config(path), sort_keys=True)


def _error(path: str | Path, problem: object) -> ClusterConfigError:
    return ClusterConfigError(f"{path}: {' '.join(str(problem).split())}")
