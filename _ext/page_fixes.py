"""Sphinx extension: remove scripts that Jupyter Book 1.x includes twice.

sphinx-thebe's inline configuration (and sphinx-togglebutton's) are registered a
second time under Jupyter Book 1.x, once with the file name `None` and once with
`''`, so every page declared `THEBE_JS_URL` twice and the browser logged a
SyntaxError. Script entries that differ only in that way are dropped here,
keeping the first.
"""


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts is None:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = tuple(sorted((k, str(v)) for k, v in script.attributes.items()))
        key = (script.filename or "", script.priority, attributes)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    # early: html-page-context stops at the first handler that returns a template name
    app.connect("html-page-context", drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True}
