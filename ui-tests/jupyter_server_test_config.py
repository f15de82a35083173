"""JupyterLab server configuration of the UI tests (started by start-lab.js)."""
import os

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # port 8888, no token, no xsrf, window.jupyterapp exposed

# Notebooks live under the repository (start-lab.js makes a fresh folder per run): tslab
# resolves `@nanoresearch/kernel` from the kernel's working directory, the notebook's folder.
c.ServerApp.root_dir = os.environ["NANORESEARCH_UI_ROOT"]
c.ServerApp.allow_root = True  # sessions and CI run as root
c.LabApp.extension_manager = "readonly"  # the default PyPI manager would reach the network
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
