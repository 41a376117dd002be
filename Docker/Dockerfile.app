# The quickstart's Python service, as the app container of the sidecar pair:
# uvicorn on a Unix socket in the shared volume.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uvicorn starlette orjson
COPY examples/quickstart/app.py examples/quickstart/orderbook.py ./
CMD ["uvicorn", "app:app", "--uds", "/run/app/backend.sock", "--no-access-log"]
