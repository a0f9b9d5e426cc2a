"""The web interface's application (``docs/web.md``): served by the web worker process
(``clusterd.webworker``), a front end of the node like the shell."""
