"""Job scripts that data scientists submit to data owners through syft.

Each module here is an ordinary, importable, linted Python file; the syft bridges ship its source
text into a job, where the owner reviews exactly that text before it runs on private data.
"""
