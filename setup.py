"""Package for local installs and for Dataflow workers (--setup_file=./setup.py)."""
import setuptools

# Pinned together: these versions were measured to install side by side on Python 3.11.
# torch is pinned exactly because an unpinned torch pulls a multi-GB CUDA build.
REQUIRED = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "transformers==5.23.0",
    "torch==2.13.0",
    "google-cloud-storage==3.17.1",
    "gguf==0.19.0",
    "accelerate==1.15.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "matplotlib==3.11.2",  # report.html's charts (inline SVG)
]

TEST = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "gcp-storage-emulator==2026.7.19",
    # Drives Debian's Chromium (scripts/test.sh installs it) to load report.html; its
    # own browser download is never used.
    "playwright==1.65.2",
]

setuptools.setup(
    name="askllm-density-select",
    version="0.1.0",
    description="Ask-LLM and Density data selection for LLM pre-training, on Apache Beam.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["beam_pipelines*", "transforms*", "models*"]),
    install_requires=REQUIRED,
    extras_require={"test": TEST},
)
