"""An app that cannot be imported: the master must halt, not loop."""
import this_module_does_not_exist  # noqa: F401
