"""Word explorer API: nearest words and analogies from a collection's word2vec."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from embeddings import selectors, words
from embeddings.models import Collection, WordVectorsRun
from project.exceptions import ApplicationError, NotFound, PermissionDenied


def _collection(request: Request, name: str) -> Collection:
    collection = selectors.collection_get_visible(user=request.user, name=name)
    if collection is None:
        raise ApplicationError("No such collection.", fields={"collection": ["No such collection."]})
    return collection


class WordOutput(serializers.Serializer):
    word = serializers.CharField()
    score = serializers.FloatField()


class WordsOutput(serializers.Serializer):
    results = WordOutput(many=True)


def _out(pairs: list[tuple[str, float]]) -> dict:
    return {"results": [{"word": w, "score": round(float(s), 4)} for w, s in pairs]}


class _WordsQueryApi(APIView):
    """GET with validated query parameters on a visible collection; subclasses say what to ask."""

    InputSerializer: type[serializers.Serializer]

    def ask(self, collection: Collection, v: dict) -> list[tuple[str, float]]:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return Response(_out(self.ask(_collection(request, v["collection"]), v)))


class WordsNearestApi(_WordsQueryApi):
    class InputSerializer(serializers.Serializer):
        collection = serializers.CharField(max_length=100)
        word = serializers.CharField(max_length=50)
        k = serializers.IntegerField(min_value=1, max_value=100, default=10)

    def ask(self, collection: Collection, v: dict) -> list[tuple[str, float]]:
        return words.words_nearest(collection=collection, word=v["word"], k=v["k"])

    @extend_schema(parameters=[InputSerializer], responses=WordsOutput)
    def get(self, request: Request) -> Response:
        return super().get(request)


class WordsAnalogyApi(_WordsQueryApi):
    class InputSerializer(serializers.Serializer):
        collection = serializers.CharField(max_length=100)
        a = serializers.CharField(max_length=50)
        b = serializers.CharField(max_length=50)
        c = serializers.CharField(max_length=50)
        k = serializers.IntegerField(min_value=1, max_value=100, default=10)

    def ask(self, collection: Collection, v: dict) -> list[tuple[str, float]]:
        return words.words_analogy(collection=collection, a=v["a"], b=v["b"], c=v["c"], k=v["k"])

    @extend_schema(parameters=[InputSerializer], responses=WordsOutput)
    def get(self, request: Request) -> Response:
        return super().get(request)


class WordsRunOutput(serializers.Serializer):
    id = serializers.IntegerField()
    collection = serializers.CharField(source="collection.name")
    status = serializers.ChoiceField(choices=WordVectorsRun.Status.choices)
    reason = serializers.CharField()
    vocabulary = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class WordsTrainApi(APIView):
    """POST: learn a collection's word vectors (400 with the reason when it has too few
    captions; nothing is queued). GET: how the collection's latest request went."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "WordsTrain"  # unique schema component names (drf_spectacular.W001)

        collection = serializers.CharField(max_length=100)

    @extend_schema(parameters=[InputSerializer], responses=WordsRunOutput)
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        run = words.word2vec_last_run(collection=_collection(request, data.validated_data["collection"]))
        if run is None:
            raise NotFound("Word vectors were never requested for this collection.")
        return Response(WordsRunOutput(run).data)

    @extend_schema(request=InputSerializer, responses={202: WordsRunOutput})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        collection = _collection(request, data.validated_data["collection"])
        if not selectors.collection_can_write(user=request.user, collection=collection):
            raise PermissionDenied("Only the collection's owner can train its word vectors.")
        run = words.word2vec_enqueue(collection=collection, user=request.user)
        return Response(WordsRunOutput(run).data, status=status.HTTP_202_ACCEPTED)
