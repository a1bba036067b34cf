"""The ``reconciler`` command: thin click commands over the layers below."""
