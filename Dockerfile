# The auditrelay image: the `auditrelay` console script, run as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE requirements.lock ./
# auditrelay/ links the card's folders in (agents, api, ops, producer, schemas).
COPY auditrelay ./auditrelay
COPY agents ./agents
COPY schemas ./schemas
COPY producer ./producer
COPY ops ./ops
COPY api ./api
RUN pip install -r requirements.lock && pip install --no-deps ".[worker,api,postgres]" \
    && useradd --system --uid 10001 --home /var/lib/auditrelay auditrelay \
    && mkdir -p /var/lib/auditrelay && chown auditrelay /var/lib/auditrelay
USER auditrelay
ENTRYPOINT ["auditrelay"]
CMD ["worker"]
