"""Demo tasks and the `taskmill_demo` command that submits them."""
