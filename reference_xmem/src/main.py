"""Entrypoint: ``python -m uvicorn main:model.app --app-dir ./src --port 8000 --ws websockets``."""

from __future__ import annotations

import os

import supervisely as sly
from dotenv import load_dotenv

from serve_xmem import settings
from serve_xmem.app import XMemTracker
from serve_xmem.weights import default_model_dir

if sly.is_development():
    load_dotenv("debug.env")
    load_dotenv(os.path.expanduser("~/supervisely.env"))

model = XMemTracker(model_dir=str(default_model_dir()))
model.serve()
sly.logger.info("%s %s is serving", settings.APP_NAME, settings.APP_VERSION)
