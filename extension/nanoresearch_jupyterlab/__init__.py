"""Python package that ships the prebuilt NanoResearch JupyterLab extension."""

__version__ = "0.1.0"


def _jupyter_labextension_paths():
    """Where JupyterLab finds the prebuilt extension (used by `jupyter-builder develop`)."""
    return [{"src": "labextension", "dest": "@nanoresearch/jupyterlab"}]
