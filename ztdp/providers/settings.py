"""A provider's settings section: the configured default overlaid by the environment's own.

`Settings.providers[<kind>]` (the server's configuration: where its credentials go) is overlaid
field by field by the environment's `spec.providers.<kind>` (readable by every viewer: no
credentials there), then validated with the provider's `settings_model` when it declares one.
The result, a plain dict, is `Target.settings`. Messages name the field and the rule, never the
value: a configured section may hold a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ztdp.errors import InvalidInput, PermanentError, PluginInvalid

__all__ = ["check_model", "check_sections", "merged", "resolve", "section_problems"]


def check_model(provider: Any, where: str) -> None:
    """Refuse a provider whose `settings_model` is not a pydantic model class."""
    model = getattr(provider, "settings_model", None)
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginInvalid(f"{where}: settings_model must be a pydantic BaseModel subclass")


def merged(configured: Mapping[str, Any] | None, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The configured default, each field the environment names replaced by its value."""
    return {**(configured or {}), **(spec or {})}


def section_problems(
    provider: Any, kind: str, *, configured: Mapping[str, Any] | None, spec: Mapping[str, Any]
) -> list[dict[str, str]]:
    """What is wrong with the merged section, each `{"loc", "msg", "type"}` with `loc` the
    field's path from the environment (`spec.providers.<kind>.<field>`); [] when it is fine."""
    try:
        _validated(provider, configured, spec)
    except ValidationError as exc:
        return [
            {
                "loc": ".".join(["spec", "providers", kind, *(str(p) for p in e["loc"])]),
                "msg": e["msg"],  # pydantic's message, without the input it refused
                "type": e["type"],
            }
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
    except Exception as exc:  # the plugin's model is broken; the section is what broke it
        loc = f"spec.providers.{kind}"
        return [{"loc": loc, "msg": _broken(provider, kind, exc), "type": "plugin_error"}]
    return []


def check_sections(
    providers: Any, sections: Mapping[str, Mapping[str, Any]], configured: Mapping[str, Any]
) -> None:
    """Raise InvalidInput naming every bad field of the sections of installed providers. A
    section of a provider not installed here is kept as given: the plan says it is missing."""
    problems: list[dict[str, str]] = []
    for kind, spec in sections.items():
        provider = providers.get(kind)
        if provider is not None:
            problems += section_problems(provider, kind, configured=configured.get(kind), spec=spec)
    if problems:
        first = problems[0]
        raise InvalidInput(f"{first['loc']}: {first['msg']}", field=first["loc"], errors=problems)


def resolve(
    provider: Any,
    kind: str,
    *,
    environment: str,
    configured: Mapping[str, Any] | None,
    spec: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`Target.settings` for `provider` in `environment`; PermanentError naming the field."""
    try:
        return _validated(provider, configured, spec or {})
    except ValidationError as exc:
        e = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        loc = ".".join(["spec", "providers", kind, *(str(p) for p in e["loc"])])
        raise PermanentError(
            f"environment {environment}: {loc}: {e['msg']} (the {kind} provider's settings, "
            "from the environment and the server's configured default)"
        ) from None
    except Exception as exc:
        raise PermanentError(f"environment {environment}: {_broken(provider, kind, exc)}") from None


def _broken(provider: Any, kind: str, exc: Exception) -> str:
    # The exception's type only: its message may quote the section, credentials and all.
    model = type(provider).__name__
    return f"the settings model of provider {kind} ({model}) failed: {type(exc).__name__}"


def _validated(
    provider: Any, configured: Mapping[str, Any] | None, spec: Mapping[str, Any]
) -> dict[str, Any]:
    section = merged(configured, spec)
    model = getattr(provider, "settings_model", None)
    if model is None:
        return section
    # The context lets a model refuse what only the configuration may hold (a password): the
    # environment's own section is readable by every viewer.
    valid = model.model_validate(section, context={"spec": dict(spec)})
    return dict(valid.model_dump(mode="json"))
