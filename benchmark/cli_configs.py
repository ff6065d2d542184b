"""The command line's config store: the schemas of ``conf/``, one ``method`` option per registered method (its typed
settings node) and per Captum attribution class, and the plugins named by ``plugins=`` (imported before Hydra
composes, so what they register is an option by name)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from benchmark.config import ExperimentConfig, ReportConfig
from benchmark.registry import load_plugins

CONFIG_PATH = "pkg://benchmark.conf"


def register_configs() -> None:
    """The schemas of conf/; one ``method`` option per registered method, its typed settings node made from the
    method's dataclass (``benchmark.methods.settings``); and one per Captum input attribution class
    (``captum_deeplift``, ``captum_occlusion``, ...), each with its own settings node."""
    cs = ConfigStore.instance()
    cs.store(name="base_experiment", node=ExperimentConfig)
    cs.store(name="base_report", node=ReportConfig)
    from benchmark.methods.captum import input_attributions
    from benchmark.methods.settings import method_nodes

    for name, schema in method_nodes().items():
        cs.store(group="method", name=name, package="method", node={name: schema})

    for key, cls in input_attributions().items():
        name = f"captum_{key}"
        cs.store(group="method", name=name, package="method",
                 node={name: {"attribution": cls.__name__, "init_kwargs": {}, "attribute_kwargs": {}}})


def hydra_dir(root: str) -> str:
    """Where Hydra keeps its job folders: ``<root>/.hydra``, or the system's temporary folder when ``root`` cannot
    hold it (a file, an unwritable place), so the suite's own check names ``results_root`` instead of Hydra
    failing with a traceback before any of the suite's code runs."""
    import tempfile

    path = Path(str(root)).expanduser() / ".hydra"
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return str(path)
    except OSError:
        return str(Path(tempfile.gettempdir()) / "sanity_check_hydra")


def plugins_on_command_line(argv: list[str]) -> list[str]:
    """The modules ``plugins=[...]`` names among the overrides (loaded before composing, so a method a plugin registers
    is a ``method=`` option); a value that does not parse is left to ``to_experiment`` to refuse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [a for a in argv if a.lstrip("+").startswith("plugins=")]
    try:
        value = OverridesParser.create().parse_overrides(given[-1:])[0].value() if given else []
    except Exception:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def register_command_line_configs(argv: list[str]) -> None:
    """Import the command line's plugins, then store the configs once, what the plugins registered included: their
    methods as ``method=`` options, their models as ``model=<name>`` (no YAML file needed). A module that does not
    import is refused by ``to_experiment`` with the key and the fix, not here with a traceback."""
    from benchmark.models import ARCHITECTURES

    before = set(ARCHITECTURES)
    try:
        load_plugins(plugins_on_command_line(argv))
    except ValueError:
        pass
    register_configs()
    for name in sorted(set(ARCHITECTURES) - before):
        ConfigStore.instance().store(group="model", name=name, package="model", node={"name": name})


