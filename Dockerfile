# bjc controller image: a slim Python runtime with the package installed, run as non-root.
#   docker build -t ghcr.io/bjc-project/bjc:0.1.0 .     (the tag the manifests expect)
# tests/e2e/test_realnode.py builds it in CI (buildah, the base supplied locally) and
# runs the shipped manifests with it on a real kubelet.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bjc ./bjc
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# a home the user owns, as the working directory: `bjc demo` writes ./demo-reports
# (`bjc run` writes only to its report directory, a volume)
RUN mkdir /home/bjc && chown 10001:10001 /home/bjc
ENV HOME=/home/bjc
WORKDIR /home/bjc
USER 10001:10001
EXPOSE 8080 8090 9152 9153
ENTRYPOINT ["bjc"]
CMD ["run"]
