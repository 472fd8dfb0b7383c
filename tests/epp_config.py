"""A checker for llm-d ``EndpointPickerConfig`` documents, written from llm-d-router's sources so
that a rendered config is refused here for the reasons the endpoint picker (v0.10) would refuse it:

- apix/config/v1alpha1/endpointpickerconfig_types.go: the fields of ``EndpointPickerConfig``,
  ``PluginSpec`` (name, type, parameters) and ``SchedulingProfile`` / ``SchedulingPlugin``
  (pluginRef, weight); pkg/epp/config/loader decodes them strictly (unknown fields are errors);
- pkg/epp/config/loader: every plugin has a type registered in the plugin registry, names are
  unique (a missing name is the type), exactly one profile handler, and the
  ``single-profile-handler`` takes exactly one scheduling profile;
- cmd/epp/runner/runner.go (``registerInTreePlugins``): the registered types and their stability;
  an Alpha plugin needs ``--allow-experimental-plugins``, which llmfleet does not pass;
- pkg/epp/framework/plugins/scheduling/profilehandler/disagg: ``disagg-profile-handler`` runs the
  ``prefill`` and ``decode`` profiles, its ``deciders.prefill`` names a decider plugin;
  ``prefix-based-pd-decider`` takes ``nonCachedTokens`` >= 0 (0 disables P/D).
Only the plugins llmfleet may render are listed, with the stability runner.go gives them.
"""

from __future__ import annotations

API_VERSIONS = {"llm-d.ai/v1alpha1"}
"""What v0.10 decodes without a deprecation (``inference.networking.x-k8s.io/v1alpha1`` is deprecated)"""

PLUGIN_STABILITY = {
    "single-profile-handler": "Beta", "disagg-profile-handler": "Beta", "prefill-filter": "Beta",
    "decode-filter": "Beta", "prefix-cache-scorer": "Beta", "queue-scorer": "Beta",
    "kv-cache-utilization-scorer": "Beta", "load-aware-scorer": "Beta", "active-request-scorer": "Beta",
    "max-score-picker": "Beta", "prefix-based-pd-decider": "Beta", "always-disagg-pd-decider": "Beta",
    "label-selector-filter": "Beta", "models-responder": "Alpha", "label-producer": "Alpha",
}
PROFILE_HANDLERS = {"single-profile-handler", "disagg-profile-handler"}
DECIDERS = {"prefix-based-pd-decider", "always-disagg-pd-decider"}
TOP_FIELDS = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "dataLayer", "flowControl",
              "requestHandler", "saturationDetector", "parser"}


def epp_config_errors(cfg: dict, allow_experimental: bool = False) -> list[str]:
    """Why the endpoint picker would refuse ``cfg`` (empty: it loads)."""
    errors = []
    if cfg.get("apiVersion") not in API_VERSIONS or cfg.get("kind") != "EndpointPickerConfig":
        errors.append(f"apiVersion/kind {cfg.get('apiVersion')}/{cfg.get('kind')} is not an EndpointPickerConfig")
    errors += [f"unknown field {k!r}" for k in set(cfg) - TOP_FIELDS]
    names: dict[str, str] = {}
    for p in cfg.get("plugins") or []:
        errors += [f"plugin {p}: unknown field {k!r}" for k in set(p) - {"name", "type", "parameters"}]
        ptype = p.get("type")
        if ptype not in PLUGIN_STABILITY:
            errors.append(f"plugin type {ptype!r} is not registered")
        elif PLUGIN_STABILITY[ptype] == "Alpha" and not allow_experimental:
            errors.append(f"plugin type {ptype!r} is Alpha: needs --allow-experimental-plugins")
        name = p.get("name") or ptype
        if name in names:
            errors.append(f"duplicate plugin name {name!r}")
        names[name] = ptype
    handlers = [n for n, t in names.items() if t in PROFILE_HANDLERS]
    if len(handlers) != 1:
        errors.append(f"exactly one profile handler needed, found {handlers}")
    profiles = {}
    for prof in cfg.get("schedulingProfiles") or []:
        errors += [f"profile {prof.get('name')}: unknown field {k!r}" for k in set(prof) - {"name", "plugins"}]
        profiles[prof.get("name")] = prof
        for ref in prof.get("plugins") or []:
            errors += [f"profile {prof.get('name')}: unknown field {k!r}" for k in set(ref) - {"pluginRef", "weight"}]
            if ref.get("pluginRef") not in names:
                errors.append(f"profile {prof.get('name')}: pluginRef {ref.get('pluginRef')!r} names no plugin")
            weight = ref.get("weight")
            if weight is not None and not isinstance(weight, (int, float)):
                errors.append(f"profile {prof.get('name')}: weight {weight!r} is not a number")
    if not profiles:
        errors.append("no schedulingProfiles")
    handler_type = names.get(handlers[0]) if len(handlers) == 1 else None
    if handler_type == "single-profile-handler" and len(profiles) != 1:
        errors.append("single-profile-handler needs exactly one scheduling profile")
    if handler_type == "disagg-profile-handler":
        params = next(p for p in cfg["plugins"] if (p.get("name") or p["type"]) == handlers[0]).get("parameters") or {}
        wanted = {"prefill": "prefill", "decode": "decode", **(params.get("profiles") or {})}
        errors += [f"disagg-profile-handler: no profile {v!r}" for v in (wanted["prefill"], wanted["decode"])
                   if v not in profiles]
        decider = (params.get("deciders") or {}).get("prefill")
        if decider is not None and names.get(decider) not in DECIDERS:
            errors.append(f"disagg-profile-handler: decider {decider!r} is no PD decider plugin")
    for p in cfg.get("plugins") or []:
        if p.get("type") == "prefix-based-pd-decider":
            extra = set(p.get("parameters") or {}) - {"nonCachedTokens"}
            tokens = (p.get("parameters") or {}).get("nonCachedTokens", 0)
            if extra or not isinstance(tokens, int) or tokens < 0:
                errors.append(f"prefix-based-pd-decider: bad parameters {p.get('parameters')}")
    return errors
