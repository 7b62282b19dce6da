"""Where results go: MLflow tracking, the results record (``results/runs/*.csv``), Markdown
cells and plots. Nothing here imports a task or the run.
"""
