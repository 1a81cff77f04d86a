from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.split("#")[0].strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="mtl-tf",
    version="0.1.0",
    description="The multi-task learning model zoo for Keras and TensorFlow",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mtl_tf", "mtl_tf.*", "zoo", "zoo.*", "training",
                                    "training.*", "tuning", "tuning.*"]),
    install_requires=requirements,
    entry_points={"console_scripts": ["mtl-tf = training.cli:main"]},
)
