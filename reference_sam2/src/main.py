"""Entrypoint: ``python -m uvicorn main:model.app --app-dir ./src --port 8000 --ws websockets``."""

from __future__ import annotations

import os

import supervisely as sly
from dotenv import load_dotenv

from serve_sam2.app import SAM21Tracker

if sly.is_development():
    load_dotenv("debug.env")
    load_dotenv(os.path.expanduser("~/supervisely.env"))

model = SAM21Tracker()
model.serve()
