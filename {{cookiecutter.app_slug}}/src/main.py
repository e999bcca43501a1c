"""Entrypoint: ``python -m uvicorn main:model.app --app-dir ./src --port {{ cookiecutter.port }} --ws websockets``."""

from __future__ import annotations

import os

import supervisely as sly
from dotenv import load_dotenv

from {{ cookiecutter.__package_name }} import settings
from {{ cookiecutter.__package_name }}.app import {{ cookiecutter.__class_name }}
from {{ cookiecutter.__package_name }}.weights import default_model_dir

if sly.is_development():
    load_dotenv("debug.env")
    load_dotenv(os.path.expanduser("~/supervisely.env"))

model = {{ cookiecutter.__class_name }}(model_dir=str(default_model_dir()))
model.serve()
sly.logger.info("%s %s is serving", settings.APP_NAME, settings.APP_VERSION)
