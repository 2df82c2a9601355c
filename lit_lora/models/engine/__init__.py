"""PeftModule's machinery: build, checkpoint, resume, optimizer, ZeRO, footprint."""
