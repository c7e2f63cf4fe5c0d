"""Language tags: the code lives at ground level (streamforge/languages.py), where the web side's caption
checks may use it too; this module re-exports it for the pipeline's callers."""
from streamforge.languages import language_name, normalise_language, valid_language  # noqa: F401 (re-exported)
