"""Every job command in the README names only options the job or Beam knows, and its
YAML config example is a config file the job accepts."""
import os
import re

import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import config_file
from beam_pipelines.options import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  return open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _commands():
  text = _readme().replace("\\\n", " ")
  return [line for line in text.splitlines() if "-m beam_pipelines.select_data" in line]


def test_readme_commands_use_known_options():
  parser = build_parser()
  ours = {s[2:] for a in parser._actions for s in a.option_strings}  # pylint: disable=protected-access
  beam = set(PipelineOptions([]).get_all_options())
  commands = _commands()
  assert len(commands) >= 8
  for command in commands:
    for name in re.findall(r"(?<=\s)--([a-z_]+)", command):
      assert name in ours or name in beam, (name, command)


def test_readme_walkthroughs_cover_the_corpora():
  text = _readme()
  for needle in ("*.parquet", "*.arrow", ".warc.wet.gz", "--text_field=raw_content",
                 "--id_field=doc_id", "meta.url", "--config=run.yaml"):
    assert needle in text, needle


def test_readme_config_example_is_accepted():
  block = re.search(r"```yaml\n(.*?)```", _readme(), flags=re.S).group(1)
  mapping = yaml.safe_load(block)
  parser = build_parser()
  ours = {a.option_strings[0][2:]: a for a in parser._actions  # pylint: disable=protected-access
          if a.option_strings and a.option_strings[0].startswith("--")}
  argv = config_file.to_argv("run.yaml", mapping, ours, config_file.beam_option_names())
  args, _ = parser.parse_known_args(argv)
  assert args.keep_fields == ("url", "token_count") and args.keep_fraction == 0.1
