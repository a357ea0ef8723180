# bjc controller image: a slim Python runtime with the package installed, run as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bjc ./bjc
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8080 8090 9152 9153
ENTRYPOINT ["bjc"]
CMD ["run"]
