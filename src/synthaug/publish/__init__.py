"""Publishing a run: a Hugging Face dataset card (`card.py`) and a Hub push (`hub.py`).

`files.py` picks the data files both name and upload; `secrets.py` keeps secrets out of
what leaves the machine.
"""
