"""Voice conversion (the original's ``ChatterboxVC``): S3 tokenizer + S3Gen, no T3.

``source.py`` loads sources as the original does and cuts long ones at pauses, ``timeline.py``
joins the converted pieces at their source times, ``converter.py`` is the front door.
"""

from vllm_chatterbox.conversion.converter import ConversionJob, VoiceConverter

__all__ = ["ConversionJob", "VoiceConverter"]
