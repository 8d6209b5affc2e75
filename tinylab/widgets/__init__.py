"""ipywidgets front ends, one module per notebook. Each widget calls a plain function that
a headless caller (nbval, a script) can call directly with the same arguments."""
