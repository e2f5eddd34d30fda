"""tingji's on-device pipeline: audio, VAD, recognition, storage, jobs."""

import os

# The appliance is offline: nothing below may reach a model hub.  huggingface_hub reads
# this when it is first imported (faster-whisper imports it), so it is set here, first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
