from rest_framework.routers import DefaultRouter

from . import apis

router = DefaultRouter()
router.register("prompt-sets", apis.PromptSetViewSet)
router.register("questions", apis.QuestionViewSet)
router.register("models", apis.LanguageModelViewSet)
router.register("runs", apis.GenerationRunViewSet)
router.register("instruction-datasets", apis.InstructionDatasetViewSet)
router.register("finetune-runs", apis.FineTuneRunViewSet)

urlpatterns = router.urls
