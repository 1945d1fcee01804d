"""The image pins agree everywhere, and the Dockerfiles only COPY what the repository has.

config/images.yaml is the one place image tags are pinned; the Dockerfiles' base ARG defaults,
the controller's default serve image and the chart's values must name the same tags, or a
`helm install` would run an image nothing here builds.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from controller.workspace.reconciler import DEFAULT_SERVE_IMAGE
from hack.images.requirements import main as requirements_main
from hack.images.requirements import pinned_version, requirements

REPO = Path(__file__).resolve().parents[3]
PINS = yaml.safe_load((REPO / "config/images.yaml").read_text())
VALUES = REPO / "config/chart/kaito-py/values.yaml"
HELPERS = REPO / "config/chart/kaito-py/templates/_helpers.tpl"
PYPROJECT = REPO / "pyproject.toml"
DOCKERFILES = sorted({v["dockerfile"] for v in [*PINS["images"].values(), *PINS["bases"].values()]})


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / dockerfile).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def global_args(dockerfile: str) -> dict[str, str]:
    """The ARGs with defaults declared before the first FROM (the ones a FROM can use)."""
    args: dict[str, str] = {}
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def copy_sources(dockerfile: str) -> list[str]:
    """The build-context paths every COPY/ADD reads (COPY --from=<stage> reads no context)."""
    sources: list[str] = []
    for word, rest in instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        parts = rest.split()
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [p for p in parts if not p.startswith("--")]
        assert len(paths) >= 2, f"{dockerfile}: {word} {rest}"
        sources += paths[:-1]
    return sources


def image(ref: dict) -> str:
    return f"{ref['repository']}:{ref['tag']}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copy_source_is_in_the_repository_and_the_context(dockerfile):
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile} copies nothing?"
    for src in sources:
        assert (REPO / src).exists(), f"{dockerfile} copies {src}, which the repository does not have"
        assert not any(src == pat or src.startswith(pat.rstrip("/") + "/") for pat in ignored), (
            f"{dockerfile} copies {src}, which .dockerignore keeps out of the build context")


@pytest.mark.parametrize("name", sorted(PINS["bases"]))
def test_dockerfile_base_arg_default_is_the_pinned_base(name):
    base = PINS["bases"][name]
    args = global_args(base["dockerfile"])
    assert args.get(base["arg"]) == base["image"], (
        f"{base['dockerfile']}: ARG {base['arg']}={args.get(base['arg'])}, config/images.yaml pins "
        f"{base['image']}")
    froms = [rest.split()[0] for word, rest in instructions(base["dockerfile"]) if word == "FROM"]
    stages = {rest.split()[-1] for word, rest in instructions(base["dockerfile"])
              if word == "FROM" and " AS " in rest.upper()}
    assert froms and all(f in (f"${{{base['arg']}}}", f"${base['arg']}") or f in stages for f in froms), (
        f"{base['dockerfile']} builds FROM {froms}: every stage must start from ${{{base['arg']}}}")


def test_the_controllers_default_serve_image_is_the_pinned_serve_image():
    assert image(PINS["images"]["serve"]) == DEFAULT_SERVE_IMAGE


def test_the_chart_values_name_the_pinned_images():
    if not VALUES.exists():
        pytest.skip(f"{VALUES.relative_to(REPO)} not in this tree yet")
    values = yaml.safe_load(VALUES.read_text())["images"]
    for name in ("operator", "serve"):
        got = {k: str(values[name][k]) for k in ("repository", "tag")}
        want = {k: str(PINS["images"][name][k]) for k in ("repository", "tag")}
        assert got == want, f"values.yaml images.{name} {got} != config/images.yaml {want}"


def test_chart_values_that_disagree_fail(tmp_path, monkeypatch):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"images": {
        "operator": PINS["images"]["operator"],
        "serve": {**PINS["images"]["serve"], "tag": "0.0.9"},
    }}))
    monkeypatch.setitem(globals(), "VALUES", values)
    with pytest.raises(AssertionError, match=r"images\.serve"):
        test_the_chart_values_name_the_pinned_images()


def test_the_operator_image_user_is_the_charts_run_as_user():
    users = [rest for word, rest in instructions(PINS["images"]["operator"]["dockerfile"]) if word == "USER"]
    assert users and re.fullmatch(r"\d+:\d+", users[-1]), "the operator image needs a numeric USER uid:gid"
    uid = int(users[-1].split(":")[0])
    assert uid != 0
    if HELPERS.exists():
        chart_uids = {int(u) for u in re.findall(r"runAsUser:\s*(\d+)", HELPERS.read_text())}
        assert chart_uids == {uid}, f"the chart runs as {chart_uids}, the image's USER is {uid}"


def test_our_images_are_tagged_with_the_package_version():
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    for name, ref in PINS["images"].items():
        assert str(ref["tag"]) == version, f"images.{name}.tag {ref['tag']} != pyproject version {version}"


def test_the_ray_base_is_the_pinned_ray_and_python():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = requirements(PYPROJECT, sorted(project.get("optional-dependencies", {})))
    ray = pinned_version(reqs, "ray")
    assert ray, "pyproject.toml pins no ray==VERSION"
    repo, _, tag = PINS["bases"]["ray"]["image"].partition(":")
    assert repo == "rayproject/ray", "the serving image builds on the official Ray image"
    assert tag.split("-")[0] == ray, f"Ray base {tag} is not the pinned ray {ray}"
    assert "gpu" in tag.split("-") or any(t.startswith("cu") for t in tag.split("-")), f"{tag}: no CUDA"
    py = re.search(r"python:(\d+)\.(\d+)", PINS["bases"]["python"]["image"])
    assert py and f"py{py[1]}{py[2]}" in tag.split("-"), "the two images run the same Python minor"


# --- hack/images/requirements.py: the dependency layer's requirement list --------------------------

def _pyproject(tmp_path: Path) -> Path:
    p = tmp_path / "pyproject.toml"
    p.write_text('''[project]
name = "kaito-py"
version = "0"
dependencies = ["pydantic==2.0", "pyyaml==6.0"]
[project.optional-dependencies]
serve = ["ray[serve]==2.60.0", "torch==2.0"]  # a comment
tuning = ["kaito-py[serve]", "pyarrow==1.0", "Kaito_Py[serve,tuning]"]
''')
    return p


def test_requirements_expand_self_references_once(tmp_path):
    p = _pyproject(tmp_path)
    assert requirements(p, []) == ["pydantic==2.0", "pyyaml==6.0"]
    assert requirements(p, ["tuning"]) == ["pydantic==2.0", "pyyaml==6.0", "ray[serve]==2.60.0",
                                           "torch==2.0", "pyarrow==1.0"]
    assert requirements(p, ["serve", "tuning"]) == requirements(p, ["tuning"])
    assert pinned_version(requirements(p, ["serve"]), "ray") == "2.60.0"
    assert pinned_version(requirements(p, []), "ray") is None


def test_requirements_refuse_an_unknown_extra(tmp_path):
    with pytest.raises(SystemExit, match="no extra 'gpu'"):
        requirements(_pyproject(tmp_path), ["gpu"])


def test_requirements_check_the_installed_version(tmp_path, capsys):
    p = _pyproject(tmp_path)
    requirements_main([str(p), "serve"])
    assert capsys.readouterr().out.split() == ["pydantic==2.0", "pyyaml==6.0", "ray[serve]==2.60.0",
                                               "torch==2.0"]
    # pyyaml is installed here, at a version other than the fake pin
    with pytest.raises(SystemExit, match=r"pyyaml .* pins 6\.0"):
        requirements_main([str(p), "--installed-must-match", "pyyaml"])
    missing = tmp_path / "missing.toml"
    missing.write_text('[project]\nname = "x"\ndependencies = ["no-such-package-here==1.0"]\n')
    with pytest.raises(SystemExit, match="not installed"):
        requirements_main([str(missing), "--installed-must-match", "no-such-package-here"])
