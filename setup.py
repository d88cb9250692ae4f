"""Packaging for llava-ln: lean core dependencies, everything heavy in extras."""
from setuptools import find_packages, setup

setup(
    name="llava-ln",
    version="0.1.0",
    description="Turn any Hugging Face LLM into a LLaVA-style multimodal LLM by tuning its normalization layers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["llava_ln", "llava_ln.*"]),
    include_package_data=True,
    # The committed toy backbones (`llava-ln toy` copies them), also for non-editable installs.
    package_data={"llava_ln.toy": ["assets/*.json", "assets/llm/*", "assets/vision/*"]},
    install_requires=[
        # No upper bound: an environment's newer torch is kept, never replaced (tested with pip's dry run).
        "torch>=2.4",
        "transformers>=5.17,<6",
        "peft>=0.17",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        "protobuf>=4",
        "tokenizers>=0.21",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        "train": ["deepspeed>=0.16", "tensorboard>=2.14"],
        "flash": ["flash-attn>=2.6"],
        "kernels": ["liger-kernel>=0.5"],  # fused Triton kernels for --kernels liger/auto (CUDA only)
        "quant": ["bitsandbytes>=0.50"],  # --bits 4|8: a quantized frozen base (NF4/FP4 on CPU too)
        "eval": ["pycocoevalcap>=1.2"],
        "demo": ["matplotlib>=3.7"],
        "dev": ["pytest>=8", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["llava-ln=llava_ln.cli:main"]},
)
