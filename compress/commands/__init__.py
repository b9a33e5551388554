"""The CLI's commands besides running a sweep: they sit above the pipeline they drive."""
