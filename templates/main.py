"""Flex Template entry point: FLEX_TEMPLATE_PYTHON_PY_FILE in templates/Dockerfile.

On the launcher VM, Dataflow's template launcher runs this file with the template
parameters as `--name=value` plus the pipeline options it adds itself (--runner,
--project, --region, --job_name, --temp_location, --staging_location,
--template_location, ...). select_data builds the pipeline graph and the launcher
submits it; the workers start from the same image through Beam's boot entrypoint.
"""
import os
import sys
from typing import List, Mapping, Optional

from beam_pipelines import select_data

# Set at image build time to the image's own URI (templates/cloudbuild.yaml passes
# --build-arg SDK_CONTAINER_IMAGE=...): workers then run the launcher's image even when
# the run command forgets --parameters sdk_container_image=...
IMAGE_ENV = "ASKLLM_SDK_CONTAINER_IMAGE"
_IMAGE_OPTIONS = ("--sdk_container_image", "--worker_harness_container_image")


def launcher_argv(argv: List[str], environ: Optional[Mapping[str, str]] = None) -> List[str]:
  """argv, plus --sdk_container_image=<this image> unless an image was chosen."""
  environ = os.environ if environ is None else environ
  image = environ.get(IMAGE_ENV, "").strip()
  chosen = any(a == o or a.startswith(o + "=") for a in argv for o in _IMAGE_OPTIONS)
  if image and not chosen:
    return list(argv) + [f"--sdk_container_image={image}"]
  return list(argv)


if __name__ == "__main__":
  select_data.main(launcher_argv(sys.argv[1:]))
