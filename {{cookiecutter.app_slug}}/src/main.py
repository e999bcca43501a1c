"""Entrypoint: ``python -m uvicorn main:model.app --app-dir ./src --port {{ cookiecutter.port }} --ws websockets``."""

from __future__ import annotations

import os

import supervisely as sly
from dotenv import load_dotenv

from {{ cookiecutter.__package_name }}.app import {{ cookiecutter.__class_name }}

if sly.is_development():
    load_dotenv("debug.env")
    load_dotenv(os.path.expanduser("~/supervisely.env"))

model = {{ cookiecutter.__class_name }}()
model.serve()
